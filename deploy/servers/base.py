"""What every server we run as a child process shares: ``ManagedServer`` (start, readiness, stop, log
tail), free ports and ``stop_process``. The servers themselves: mosquitto.py, kafka.py,
influxdb.py. Each gets its own directory for config, data and logs, so stopping and starting again on
the same directory keeps the data.

Tests run them on free ports (``free_port()``); the local stack runs them on 1883, 9092 and 8086.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from deploy.wait import WaitTimeout, wait_until

log = logging.getLogger("deploy.servers")


class ServerError(RuntimeError):
    """A server could not be started, did not become ready, or exited."""


class PortInUseError(ServerError):
    """A port a server needs is taken before it starts."""


class ServerExitedError(ServerError):
    """The server process exited while we waited for it; the message ends with its log."""


class ServerNotReadyError(ServerError, TimeoutError):
    """The server kept running but did not answer its readiness check in time."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The servers set SO_REUSEADDR too, so a port left in TIME_WAIT by a stopped server counts as
        # free, while one with a live listener (on this address or the wildcard) does not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS's pick, so parallel callers get different ones)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def client_host(host: str) -> str:
    # A server bound to the wildcard address is reached through loopback.
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def _port_holder(port: int) -> str:
    """`` (pid 123: mosquitto)`` for the process listening on ``port``, when psutil can tell."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return f" (by pid {conn.pid}: {psutil.Process(conn.pid).name()})"
    except Exception:  # best effort: only decorates the error message
        pass
    return ""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def stop_process(proc: subprocess.Popen, timeout: float = 60.0, sig: int = signal.SIGTERM,
                 name: str | None = None) -> int:
    """``sig`` (SIGTERM: our services drain and exit cleanly on it), then SIGKILL after ``timeout`` seconds;
    returns the exit status. A process that has already exited is only reaped."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", name or f"pid {proc.pid}", timeout)
            proc.kill()
            proc.wait()
    return proc.returncode


class ManagedServer(ABC):
    """A server run as a child process in its own session, with its config, data and logs in ``state_dir``.

    ``start()`` then ``wait_ready()``; ``stop()`` (SIGTERM, then SIGKILL) or ``kill()``. Also a context
    manager that starts, waits and stops.
    """

    name: ClassVar[str]
    #: time to first readiness on this 2-core machine, with room; callers may pass their own
    ready_timeout: ClassVar[float] = 30.0

    def __init__(self, state_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.state_dir = Path(state_dir).resolve()
        self.port = port
        self.host = host
        self._proc: subprocess.Popen[bytes] | None = None

    # -- what each server defines -------------------------------------------------------------------
    @property
    @abstractmethod
    def endpoint(self) -> str:
        """The address clients use."""

    @abstractmethod
    def _prepare(self) -> None:
        """Write config files and initialise storage; runs before every start."""

    @abstractmethod
    def _command(self) -> list[str]: ...

    @abstractmethod
    def _probe(self) -> bool:
        """One readiness check: True when the server serves clients."""

    def _ports(self) -> list[int]:
        return [self.port]

    def _env(self) -> dict[str, str] | None:
        """The child's environment; None inherits ours."""
        return None

    @property
    def console_log(self) -> Path:
        """The server's stdout and stderr, appended to across restarts."""
        return self.state_dir / f"{self.name}.out"

    #: the server's own log file, when it writes one besides its console output
    log_path: Path | None = None

    @property
    def log_files(self) -> list[Path]:
        return [self.console_log] if self.log_path is None else [self.console_log, self.log_path]

    # -- lifecycle -------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Write the config and launch the server; returns at once (see ``wait_ready``)."""
        if self.is_running():
            raise ServerError(f"{self.name} is already running (pid {self.pid})")
        for port in self._ports():
            if not port_is_free(port, self.host):
                raise PortInUseError(f"port {port} for {self.name} is already in use{_port_holder(port)}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        cmd = self._command()
        with open(self.console_log, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            out.flush()
            # Own session: a Ctrl-C in the terminal reaches the stack, which stops the servers in order,
            # instead of reaching every server at once.
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.state_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self._env(),
            )
        log.info("%s started (pid %s) on %s", self.name, self._proc.pid, self.endpoint)

    def wait_ready(self, timeout: float | None = None) -> float:
        """Block until the server answers its readiness check; returns the seconds waited.

        Raises ``ServerExitedError`` (with the tail of its logs) if the process exits meanwhile and
        ``ServerNotReadyError`` after ``timeout`` seconds.
        """
        if self._proc is None:
            raise ServerError(f"{self.name} was not started")
        timeout = self.ready_timeout if timeout is None else timeout
        started = time.monotonic()
        try:
            wait_until(self._ready_or_raise, timeout, f"{self.name} to be ready")
        except WaitTimeout:
            raise ServerNotReadyError(f"{self.name} not ready after {timeout:.0f}s\n{self.log_tail()}") from None
        waited = time.monotonic() - started
        log.info("%s ready on %s after %.1fs", self.name, self.endpoint, waited)
        return waited

    def _ready_or_raise(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            raise ServerExitedError(
                f"{self.name} exited with status {self._proc.returncode} before it was ready\n{self.log_tail()}"
            )
        try:
            return self._probe()
        except Exception as exc:  # a probe failing in any way just means "not yet"
            log.debug("%s not ready yet: %s", self.name, exc)
            return False

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit status (None if never started).

        Safe to call when not started or already stopped.
        """
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
                self._signal(signal.SIGKILL)
                self._proc.wait()
            log.info("%s stopped (status %s)", self.name, self._proc.returncode)
        return self._proc.returncode

    def kill(self) -> None:
        """SIGKILL without any chance to flush: for fault-injection tests."""
        if self.is_running():
            self._signal(signal.SIGKILL)
            assert self._proc is not None
            self._proc.wait()

    def restart(self, timeout: float | None = None) -> float:
        """``stop()``, ``start()`` and ``wait_ready()``; returns the seconds to ready."""
        self.stop()
        self.start()
        return self.wait_ready(timeout)

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        # The whole process group, in case a server ever forks helpers.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of each of the server's non-empty log files, for error messages."""
        parts = []
        for path in self.log_files:
            tail = _tail(path, lines)
            if tail.strip():
                parts.append(f"--- {path}:\n{tail}")
        return "\n".join(parts) or f"(no output in {self.state_dir})"

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {self.endpoint} {state} in {self.state_dir}>"


def start_servers(servers: Mapping[str, ManagedServer], timeout: float | None = None,
                  say: Callable[[str], object] = log.info, started: Callable[[], object] | None = None) -> None:
    """Start each server in order and wait until it is ready before the next (``started`` is called right
    after each launch, say to record its pid). Raises on the first that fails, leaving the ones before it
    running: the caller stops them (``stop_servers``)."""
    for name, server in servers.items():
        say(f"starting {name} on {server.endpoint} ...")
        server.start()
        if started is not None:
            started()
        server.wait_ready(timeout)
        say(f"  {name} ready")


def stop_servers(servers: Mapping[str, ManagedServer], say: Callable[[str], object] = log.info) -> None:
    """Stop every server, the last started first."""
    for name in reversed(list(servers)):
        say(f"stopping {name} ...")
        servers[name].stop()
