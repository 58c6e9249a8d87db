"""One Apache Kafka 4.x node for tests: a combined broker+controller JVM on loopback ports.

The jars come from Maven Central through deploy/kafka/pom.xml; ``deploy/kafka/resolve`` (the
install step) writes their classpath to var/kafka/classpath.txt and this module only reads it,
so nothing is resolved or downloaded during a test. Without the file (or without ``java``)
:func:`classpath` raises :class:`KafkaUnavailable`, which a fixture can turn into a skip.
``tests.helpers.kafka.KafkaCluster`` configures, formats and starts these nodes.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import os
import shutil
import signal
import subprocess
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KAFKA_DEPLOY = ROOT / "deploy" / "kafka"
LOG4J2_CONFIG = KAFKA_DEPLOY / "log4j2.yaml"
CLASSPATH_FILE = Path(
    os.environ.get("WB_KAFKA_CLASSPATH_FILE", str(ROOT / "var" / "kafka" / "classpath.txt"))
)
HOST = "127.0.0.1"

# Start-up flags: the serial GC and the C1 compiler only (-XX:TieredStopAtLevel=1) start a
# broker much faster on two cores (measured: one node ready in 4.0-5.2 s instead of 7.2-7.9 s,
# three in 13 s instead of 24 s, on a loaded machine); -Xshare:auto uses the JDK's class-data
# archive when it has one.
JVM_FLAGS: tuple[str, ...] = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-Djava.awt.headless=true",
    f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
)


class KafkaUnavailable(RuntimeError):
    """No classpath file (run deploy/kafka/resolve) or no java: the broker cannot start."""


class KafkaStartError(RuntimeError):
    """A node exited or did not become ready before the deadline (the message has its log)."""


def classpath() -> str:
    """The resolved classpath of Kafka's jars (var/kafka/classpath.txt)."""
    if shutil.which("java") is None:
        raise KafkaUnavailable("java is not installed (Kafka 4.x brokers need Java 17+)")
    try:
        text = CLASSPATH_FILE.read_text().strip()
    except FileNotFoundError:
        raise KafkaUnavailable(
            f"{CLASSPATH_FILE} is missing: run deploy/kafka/resolve (the install step)"
        ) from None
    missing = [jar for jar in text.split(os.pathsep) if jar and not Path(jar).is_file()]
    if not text or missing:
        raise KafkaUnavailable(
            f"{CLASSPATH_FILE} names missing jars ({missing[:2]}...): run deploy/kafka/resolve"
        )
    return text


def kafka_uuid() -> str:
    """A Kafka ``Uuid`` string, like ``kafka-storage random-uuid`` (saves a JVM start).

    Kafka's ``Uuid.toString()`` is the URL-safe base64 of the 16 bytes without padding, and
    ``Uuid.randomUuid()`` never returns one that starts with '-' (it would read as an option).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


_LIVE: weakref.WeakSet[KafkaNode] = weakref.WeakSet()

# Every broker JVM is started by this one long-lived thread, through `setpriv --pdeathsig
# KILL`: Linux kills the JVM when the thread that started it ends, i.e. when this interpreter
# ends, even by SIGKILL or os._exit (pytest-timeout's thread method), where atexit never runs.
# (The parent-death signal follows the starting *thread*, hence one thread that lives as long
# as the interpreter rather than whichever worker thread called start().)
_SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-spawner")
_SETPRIV = shutil.which("setpriv")


@atexit.register
def _kill_leftovers() -> None:
    """No JVM outlives the interpreter, even when a test forgot to stop its cluster."""
    for node in list(_LIVE):
        node.kill()


@dataclass(eq=False)
class KafkaNode:
    """One combined broker+controller JVM; its directory (config, data, log) survives restarts."""

    node_id: int
    port: int
    controller_port: int
    directory: Path
    directory_id: str = field(default_factory=kafka_uuid)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.directory / "kafka.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def launch(self, heap: str) -> None:
        if self.running:
            raise RuntimeError(f"kafka node {self.node_id} is already running")
        command = [
            "java",
            f"-Xmx{heap}",
            *JVM_FLAGS,
            f"-Dkafka.logs.dir={self.directory / 'logs'}",
            "-cp",
            classpath(),
            "kafka.Kafka",
            str(self.config_path),
        ]
        with self.log_path.open("ab") as log:
            log.write(f"--- start {datetime.now(UTC).isoformat()}\n".encode())
            log.flush()
            if _SETPRIV is not None:
                command = [_SETPRIV, "--pdeathsig", "KILL", *command]
            self.process = _SPAWNER.submit(
                subprocess.Popen,
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                start_new_session=True,  # a Ctrl-C in the terminal is the test runner's
            ).result()
        _LIVE.add(self)

    def kill(self) -> None:
        """SIGKILL, as a crash: no controlled shutdown, no flush."""
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def terminate(self, timeout: float = 15.0) -> None:
        """SIGTERM (controlled shutdown), then SIGKILL if it has not exited by ``timeout``."""
        self._signal(signal.SIGTERM)
        if self.process is None:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def _signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)
        if not self.running:
            _LIVE.discard(self)
