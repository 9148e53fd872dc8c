"""The processes a bench starts: our services run as their containers run them (``tsdemo <command>``
plus ``TSDEMO_*`` variables) and the C tools of the baselines, each with its log file.

Children get a clean environment: the shell's ``TSDEMO_*`` settings (which may point at another
stack) are dropped and only what the bench sets is passed, so a bench always talks to its own servers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from deploy.bench.resources import ResourceMonitor
from deploy.servers import stop_process
from deploy.stack.local import http_ok
from servicekit.settings import ENV_PREFIX

#: Where the JVM artifacts are cached: machine-wide, not a pointer to some stack, so children keep it.
KEPT_VARIABLES = ("TSDEMO_CACHE_DIR", "TSDEMO_KAFKA_VERSION", "TSDEMO_SPARK_CONNECTOR_VERSION")


class ChildError(RuntimeError):
    """A child exited with an error or did not become healthy; the message ends with its log."""


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Our environment without ``TSDEMO_*`` settings (except the artifact cache), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX) or k in KEPT_VARIABLES}
    env.update(extra or {})
    return env


def tsdemo(*args: str) -> list[str]:
    """The command line of ``tsdemo <args>`` with this interpreter, as the e2e tests start services."""
    return [sys.executable, "-m", "deploy.cli", *args]


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: Path
    health_port: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def healthy(self) -> bool:
        if self.health_port is None:
            return self.running()
        return self.running() and http_ok(f"http://127.0.0.1:{self.health_port}/healthz", timeout=1.0)

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            if not self.running():
                raise ChildError(f"{self.name} exited with status {self.proc.returncode}\n{self.tail()}")
            if time.monotonic() > deadline:
                raise ChildError(f"{self.name} not healthy after {timeout_s:.0f}s\n{self.tail()}")
            time.sleep(0.2)

    def has_exited(self) -> bool:
        """Whether it exited, without reaping it: a zombie's CPU times can still be read."""
        if self.proc.returncode is not None:
            return True
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def wait_exit(self, timeout_s: float, monitor: ResourceMonitor | None = None) -> int:
        """Wait for the exit; with ``monitor``, take its last resource sample before reaping it, so a
        short-lived tool's CPU is counted to the end. Raises ``ChildError`` after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.has_exited():
            if time.monotonic() > deadline:
                raise ChildError(f"{self.name} still running after {timeout_s:.0f}s\n{self.tail()}")
            time.sleep(0.02)
        if monitor is not None:
            monitor.final_sample(self.name)
        return self.proc.wait()

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM (the services drain and exit cleanly on it), SIGKILL after ``timeout_s``."""
        return stop_process(self.proc, timeout=timeout_s, name=self.name)

    def tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return f"(no log at {self.log_path})"
        return f"--- {self.log_path}:\n" + "\n".join(text.splitlines()[-lines:])


def spawn(
    name: str,
    cmd: Sequence[str],
    log_path: Path,
    env: Mapping[str, str] | None = None,
    *,
    stdin: Any = subprocess.DEVNULL,
    stdout: int | IO[Any] | None = None,
    health_port: int | None = None,
    cwd: Path | None = None,
) -> Child:
    """Start ``cmd`` in its own session (a Ctrl-C reaches the bench, which stops children in order).

    stderr, and stdout unless ``stdout`` says otherwise, append to ``log_path``.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = child_env(env)
    if health_port is not None:
        full_env["TSDEMO_HEALTH_PORT"] = str(health_port)
    with open(log_path, "ab") as log:
        log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(map(str, cmd))}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(map(str, cmd)), env=full_env, stdin=stdin, stdout=log if stdout is None else stdout, stderr=log,
            start_new_session=True, cwd=cwd,
        )
    return Child(name, proc, log_path, health_port)


def run_tool(name: str, cmd: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
             timeout_s: float = 600.0, ok: tuple[int, ...] = (0,)) -> str:
    """Run a command to its end; its stdout, or ``ChildError`` with its log when it exits with a status
    not in ``ok``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        result = subprocess.run(list(map(str, cmd)), env=child_env(env), stdout=subprocess.PIPE, stderr=log,
                                timeout=timeout_s, stdin=subprocess.DEVNULL)
    if result.returncode not in ok:
        raise ChildError(f"{name} failed with status {result.returncode}\n{result.stdout.decode(errors='replace')}"
                         f"\n--- {log_path}:\n{log_path.read_text(errors='replace')[-3000:]}")
    return result.stdout.decode(errors="replace")
