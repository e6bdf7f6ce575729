"""A private RabbitMQ node for tests that stop and restart the broker.

The shared broker on 5672 serves every other test and helper on the machine, so a test that
restarts a broker starts its own: the installed ``rabbitmq-server`` with a configuration of
its own (the system file pins port 5672), a node name, distribution port, data, log,
feature-flag, plugin and pid files in a fresh folder, owned by the ``rabbitmq`` user when the
test runs as root. No plugins are enabled, so it boots in 4-10 s here (allow 30 s on a
loaded machine). It keeps its data directory and port across ``stop`` and ``start``, so
durable queues and persistent messages survive a restart, as on a real broker.

    node = RabbitMQNode()
    node.start()              # returns once an AMQP client can connect
    ... node.url ...
    node.restart()            # graceful stop (SIGTERM), then start again, same data and port
    node.kill(); node.start() # a crash: SIGKILL of every process of the node
    node.close()              # stop, remove the folder; nothing of the node is left running

``private_rabbitmq()`` is the same as a context manager for a fixture: it skips when the
binary is missing (and fails when CI=true), and afterwards checks that no process of the
node is left and its folder is gone. CADRE_TEST_RABBITMQ_SERVER names another
``rabbitmq-server`` script (a tarball install, say).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
"""The script the packaged ``/usr/sbin/rabbitmq-server`` wrapper runs as the rabbitmq user;
run directly, so this module owns the process (the wrapper goes through ``su``)."""


def server_binary() -> str | None:
    """The rabbitmq-server script to run (CADRE_TEST_RABBITMQ_SERVER if set, else Debian's
    inner script, else the one on PATH), or None when RabbitMQ is not installed."""
    chosen = os.environ.get("CADRE_TEST_RABBITMQ_SERVER")
    if chosen is not None:
        return chosen if Path(chosen).is_file() else None
    if Path(SERVER).is_file():
        return SERVER
    return shutil.which("rabbitmq-server")


def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NodeError(RuntimeError):
    """The private node did not start or stop as asked (the message holds its log's tail)."""


class RabbitMQNode:
    """One private RabbitMQ node: its folder, ports, and the process while it runs."""

    def __init__(self, start_timeout: float = 60.0) -> None:
        binary = server_binary()
        if binary is None:
            raise NodeError("rabbitmq-server is not installed")
        self.binary = binary
        self.start_timeout = start_timeout
        self.port = free_port()
        self.dist_port = free_port()
        self.name = f"cadretest{uuid.uuid4().hex[:8]}"
        self.nodename = f"{self.name}@localhost"
        self.base = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._as_rabbitmq = os.geteuid() == 0 and _user_exists("rabbitmq")
        self._prepare()

    @property
    def url(self) -> str:
        """The AMQP URL of this node (guest may connect from localhost)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def log_file(self) -> Path:
        return self.base / "log" / f"{self.nodename}.log"

    def _prepare(self) -> None:
        for sub in ("mnesia", "log", "home"):
            (self.base / sub).mkdir()
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
            "log.file.level = info\n"
            # the shared node's alarms are not this node's business: never block publishers
            "disk_free_limit.absolute = 1MB\n"
            "vm_memory_high_watermark.relative = 0.9\n"
        )
        (self.base / "enabled_plugins").write_text("[].\n")
        # the system env file names the shared node; this one only keeps distribution local
        (self.base / "rabbitmq-env.conf").write_text(
            'export ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}"\n'
        )
        if self._as_rabbitmq:
            import pwd

            entry = pwd.getpwnam("rabbitmq")
            for path in [self.base, *self.base.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def env(self) -> dict[str, str]:
        """The node's environment: every file of its own, nothing of the shared node's."""
        base = self.base
        keep = {k: v for k, v in os.environ.items() if k in {"PATH", "LANG", "LC_ALL", "TERM"}}
        return {
            **keep,
            "HOME": str(base / "home"),  # its own Erlang cookie
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_MNESIA_DIR": str(base / "mnesia" / self.nodename),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(base / "feature_flags"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(base / "plugins-expand"),
            "RABBITMQ_PID_FILE": str(base / "rabbitmq.pid"),
            "RABBITMQ_QUORUM_DIR": str(base / "mnesia" / self.nodename / "quorum"),
            "ERL_CRASH_DUMP": str(base / "erl_crash.dump"),
            # two schedulers are all this machine has; keep the idle node quiet
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+sbwt none +sbwtdcpu none +sbwtdio none",
        }

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the node (same data and port as before) and wait until AMQP answers."""
        if self.proc is not None and self.proc.poll() is None:
            raise NodeError(f"{self.nodename} is already running")
        kwargs: dict[str, object] = {}
        if self._as_rabbitmq:
            kwargs.update(user="rabbitmq", group="rabbitmq", extra_groups=[])
        with (self.base / "startup.log").open("ab") as out:
            self.proc = subprocess.Popen(
                [self.binary],
                cwd=self.base,
                env=self.env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed as one
                **kwargs,  # type: ignore[arg-type]
            )
        self.starts += 1
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise NodeError(
                    f"{self.nodename} exited with {self.proc.returncode}\n{self.tail()}"
                )
            if _amqp_answers(self.port):
                return
            time.sleep(0.2)
        self.kill()
        raise NodeError(
            f"{self.nodename} did not listen within {self.start_timeout} s\n{self.tail()}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the node as an operator would (SIGTERM: rabbit shuts down cleanly), killing
        it if it has not exited within `timeout` s."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            self._reap()
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
        self._reap()

    def kill(self) -> None:
        """Crash the node: SIGKILL to every process of its group (no clean shutdown)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self._reap()

    def restart(self, graceful: bool = True) -> None:
        """Stop (or kill) the node and start it again on the same data and port."""
        if graceful:
            self.stop()
        else:
            self.kill()
        self.start()

    def close(self) -> None:
        """Stop the node, make sure none of its processes is left, remove its folder."""
        try:
            self.stop(timeout=20)
        finally:
            self._reap()
            shutil.rmtree(self.base, ignore_errors=True)

    def leftovers(self) -> list[int]:
        """Pids of processes still running for this node (its beam, erl_child_setup,
        inet_gethost, ...), found by its node name or folder in their command line or by
        their process group. The shared epmd is not the node's and is never listed."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                pgid = os.getpgid(pid)
            except (OSError, ProcessLookupError):
                continue
            if "epmd" in cmdline.split(" ", 1)[0]:
                continue
            ours = self.name in cmdline or str(self.base) in cmdline
            if self.proc is not None and pgid == self.proc.pid:
                ours = True
            if ours and pid != os.getpid():
                found.append(pid)
        return found

    def _reap(self) -> None:
        """SIGKILL whatever is left of the node (child helpers outlive a killed beam)."""
        for _ in range(50):
            pids = self.leftovers()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)

    def tail(self, lines: int = 30) -> str:
        """The last lines of the node's startup output and log, for error messages."""
        parts = []
        for path in (self.base / "startup.log", self.log_file):
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(parts)


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _amqp_answers(port: int) -> bool:
    """True once the node accepts a TCP connection and answers the AMQP protocol header
    with its Connection.Start frame (a listening socket alone can precede boot's end)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            sock.settimeout(2)
            return sock.recv(1) == b"\x01"  # a method frame
    except OSError:
        return False


@contextlib.contextmanager
def private_rabbitmq(start_timeout: float = 60.0) -> Iterator[RabbitMQNode]:
    """A started private node, closed afterwards. Without rabbitmq-server installed it
    skips the test, or fails it when CI=true (the suite's rule for missing services)."""
    from tests.conftest import unavailable

    if server_binary() is None:
        unavailable("rabbitmq-server is not installed (needed for a private RabbitMQ node)")
    node = RabbitMQNode(start_timeout=start_timeout)
    try:
        node.start()
        yield node
    finally:
        node.close()
        left = node.leftovers()
        assert not left, f"processes of {node.nodename} left running: {left}"
        assert not node.base.exists(), f"{node.base} is left behind"
