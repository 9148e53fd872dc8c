"""The one process runner: a child process in its own session with its log file, for our services (run as
their containers run them, ``tsdemo <command>`` plus ``TSDEMO_*`` variables, with a health port) and for
the tools around them (the benches' C baselines, py-spy). Spawn it, wait until ``/healthz`` answers, read
its log's tail or its metrics, stop it with SIGTERM and then SIGKILL.

Children get a clean environment by default: the shell's ``TSDEMO_*`` settings (which may point at another
stack) are dropped and only what the caller sets is passed, so a bench or a test talks to its own servers.
The local stack passes ``inherit_settings=True``: there the shell's settings are the user's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from deploy.servers import free_port, stop_process
from deploy.wait import wait_until
from servicekit.settings import ENV_PREFIX

#: Where the JVM artifacts are cached: machine-wide, not a pointer to some stack, so children keep it.
KEPT_VARIABLES = ("TSDEMO_CACHE_DIR", "TSDEMO_KAFKA_VERSION", "TSDEMO_SPARK_CONNECTOR_VERSION")


class ChildError(RuntimeError):
    """A child exited with an error or did not become healthy; the message ends with its log."""


class FinalSampler(Protocol):
    def final_sample(self, name: str) -> None: ...


def child_env(extra: Mapping[str, str] | None = None, *, inherit_settings: bool = False) -> dict[str, str]:
    """Our environment (without its ``TSDEMO_*`` settings, except the artifact cache, unless
    ``inherit_settings``), plus ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if inherit_settings or not k.startswith(ENV_PREFIX) or k in KEPT_VARIABLES}
    env.update(extra or {})
    return env


def tsdemo(*args: str) -> list[str]:
    """The command line of ``tsdemo <args>`` with this interpreter (no console script needed)."""
    return [sys.executable, "-m", "deploy.cli", *args]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and body of a GET on one of our own local URLs; an HTTP error status is returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (our own local URL)
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        return 200 <= http_get(url, timeout)[0] < 300
    except OSError:
        return False


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The sum of a Prometheus metric's samples matching ``labels`` in an exposition ``text``; None when
    there is none."""
    from servicekit.scrape import sample_sums

    return sample_sums(text, {name}, labels).get(name)


@dataclass
class Process:
    name: str
    proc: subprocess.Popen
    log_path: Path
    health_port: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    @property
    def health_url(self) -> str | None:
        return None if self.health_port is None else f"http://127.0.0.1:{self.health_port}/healthz"

    def running(self) -> bool:
        return self.proc.poll() is None

    def healthy(self) -> bool:
        if self.health_url is None:
            return self.running()
        return self.running() and http_ok(self.health_url, timeout=1.0)

    def _healthy_or_raise(self) -> bool:
        if not self.running():
            raise ChildError(f"{self.name} exited with status {self.proc.returncode}\n{self.tail()}")
        return self.healthy()

    def wait_healthy(self, timeout_s: float) -> Process:
        """Until ``/healthz`` answers 200; ``ChildError`` with the log's tail if it exits first."""
        try:
            wait_until(self._healthy_or_raise, timeout_s, f"{self.name} to be healthy")
        except TimeoutError:
            raise ChildError(f"{self.name} not healthy after {timeout_s:.0f}s\n{self.tail()}") from None
        return self

    def wait_running_until(self, done: Any, timeout_s: float, what: str, every: float = 0.2) -> None:
        """Until ``done()`` is true; ``ChildError`` if the process exits first or ``timeout_s`` passes."""
        def check() -> bool:
            if not self.running():
                raise ChildError(f"{self.name} exited with status {self.proc.returncode} before {what}\n"
                                 f"{self.tail()}")
            return bool(done())
        try:
            wait_until(check, timeout_s, what, every=every)
        except TimeoutError:
            raise ChildError(f"{self.name}: no {what} after {timeout_s:.0f}s\n{self.tail()}") from None

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        """A GET on the service's health server (``/healthz``, ``/metrics``)."""
        assert self.health_port is not None, f"{self.name} has no health port"
        return http_get(f"http://127.0.0.1:{self.health_port}{path}", timeout)

    def health(self) -> tuple[int, dict]:
        code, body = self.get("/healthz")
        return code, json.loads(body)

    def metric(self, name: str, **labels: str) -> float:
        """The sum of a metric's samples (matching ``labels``) from the service's /metrics; 0 when absent."""
        return metric_value(self.get("/metrics")[1].decode(), name, labels) or 0.0

    def has_exited(self) -> bool:
        """Whether it exited, without reaping it: a zombie's CPU times can still be read."""
        if self.proc.returncode is not None:
            return True
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None

    def wait_exit(self, timeout_s: float, monitor: FinalSampler | None = None) -> int:
        """Wait for the exit; with ``monitor``, take its last resource sample before reaping it, so a
        short-lived tool's CPU is counted to the end. Raises ``ChildError`` after ``timeout_s``."""
        try:
            wait_until(self.has_exited, timeout_s, f"{self.name} to exit", every=0.02)
        except TimeoutError:
            raise ChildError(f"{self.name} still running after {timeout_s:.0f}s\n{self.tail()}") from None
        if monitor is not None:
            monitor.final_sample(self.name)
        return self.proc.wait()

    def stop(self, timeout_s: float = 60.0, sig: int = signal.SIGTERM) -> int | None:
        """``sig`` (SIGTERM: the services drain and exit cleanly on it), SIGKILL after ``timeout_s``."""
        return stop_process(self.proc, timeout=timeout_s, sig=sig, name=self.name)

    def kill(self) -> None:
        """SIGKILL, no chance to flush: for crash tests."""
        if self.running():
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait()

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
    inherit_settings: bool = False,
) -> Process:
    """Start ``cmd`` in its own session (a Ctrl-C reaches the caller, which stops children in order).

    stderr, and stdout unless ``stdout`` says otherwise, append to ``log_path``. With ``health_port`` the
    child gets it as ``TSDEMO_HEALTH_PORT``.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = child_env(env, inherit_settings=inherit_settings)
    if health_port is not None:
        full_env["TSDEMO_HEALTH_PORT"] = str(health_port)
    with open(log_path, "ab") as log:
        log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(map(str, cmd))}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(map(str, cmd)), env=full_env, stdin=stdin, stdout=log if stdout is None else stdout, stderr=log,
            start_new_session=True, cwd=cwd,
        )
    return Process(name, proc, log_path, health_port)


def start_service(name: str, args: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None, *,
                  ready_timeout_s: float | None = 240.0, cwd: Path | None = None,
                  inherit_settings: bool = False) -> Process:
    """``tsdemo <args>`` on a free health port, waited for until healthy (unless ``ready_timeout_s`` is None).
    A service that does not come up is stopped before the error is raised."""
    child = spawn(name, tsdemo(*args), log_path, env, health_port=free_port(), cwd=cwd,
                  inherit_settings=inherit_settings)
    if ready_timeout_s is not None:
        try:
            child.wait_healthy(ready_timeout_s)
        except BaseException:
            child.stop(10)
            raise
    return child


def run_tool(name: str, cmd: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
             timeout_s: float = 600.0, ok: tuple[int, ...] = (0,), cwd: Path | None = None) -> str:
    """Run a command to its end; its stdout, or ``ChildError`` with its log when it exits with a status
    not in ``ok``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        result = subprocess.run(list(map(str, cmd)), env=child_env(env), stdout=subprocess.PIPE, stderr=log,
                                timeout=timeout_s, stdin=subprocess.DEVNULL, cwd=cwd)
    if result.returncode not in ok:
        raise ChildError(f"{name} failed with status {result.returncode}\n{result.stdout.decode(errors='replace')}"
                         f"\n--- {log_path}:\n{log_path.read_text(errors='replace')[-3000:]}")
    return result.stdout.decode(errors="replace")
