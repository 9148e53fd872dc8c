"""The whole pipeline assembled once: against running servers (their ``Endpoints``), storage initialised,
then our services started in order (processing, the bridges, the generator), each once healthy, each as
its container runs it; stopped in reverse, so the generator flushes its ledger and the bridges their
in-flight messages while what is behind them still runs. The local stack, the e2e bench and the e2e tests
all run this one."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from deploy.services.components import COMPONENTS, Component, Endpoints, component
from deploy.services.process import Process, child_env, start_service, tsdemo

#: Processing checkpoints its state on SIGTERM: give it longer than the others.
STOP_TIMEOUT_S = {"processing": 120.0}


class Pipeline:
    """Our services against ``endpoints``; ``env`` is added to every one's (topics' names, the trigger...)."""

    def __init__(self, endpoints: Endpoints, logs: Path, env: Mapping[str, str] | None = None, *,
                 cwd: Path | None = None, ready_timeout_s: float = 240.0, inherit_settings: bool = False) -> None:
        self.endpoints = endpoints
        self.logs = logs
        self.extra_env = dict(env or {})
        self.cwd = cwd
        self.ready_timeout_s = ready_timeout_s
        self.inherit_settings = inherit_settings
        self.services: dict[str, Process] = {}
        self._kinds: dict[str, str] = {}

    @property
    def env(self) -> dict[str, str]:
        """Every ``TSDEMO_*`` variable the services share: all endpoints plus the extra settings."""
        return {**self.endpoints.env(), **self.extra_env}

    def component_env(self, comp: Component, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**comp.env(self.endpoints), **self.extra_env, **(extra or {})}

    def start(self, name: str, command: str | None = None, extra_env: Mapping[str, str] | None = None, *,
              args: Sequence[str] = (), wait: bool = True, log_path: Path | None = None) -> Process:
        """Start the service ``name`` (its registry entry, or the one whose command is ``command``) with
        ``args`` after its command, logging to ``log_path`` (``<logs>/<name>.log``); waits until healthy
        unless ``wait`` is false. A service of the same name started before is replaced (after a crash)."""
        comp = next((c for c in COMPONENTS.values() if c.command == (command,)), None) if command else None
        comp = comp or component(name)
        self._kinds[name] = comp.name
        service = start_service(name, [*comp.command, *args], log_path or self.logs / f"{name}.log",
                                self.component_env(comp, extra_env),
                                ready_timeout_s=self.ready_timeout_s if wait else None, cwd=self.cwd,
                                inherit_settings=self.inherit_settings)
        self.services[name] = service
        return service

    def run(self, args: Sequence[str], extra_env: Mapping[str, str] | None = None, timeout: float = 300,
            check: bool = True) -> subprocess.CompletedProcess:
        """``tsdemo <args>`` to its end with every endpoint's variables, output captured; with ``check`` an
        exit status other than 0 fails with both outputs."""
        env = child_env({**self.env, **(extra_env or {})}, inherit_settings=self.inherit_settings)
        result = subprocess.run(tsdemo(*args), env=env, cwd=self.cwd, capture_output=True, text=True,
                                timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise RuntimeError(f"tsdemo {' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout}\n{result.stderr}")
        return result

    def metrics_urls(self) -> dict[str, list[str]]:
        """Each running service's /metrics URL, by component (a second bridge ``ingest-2`` is an ingest)."""
        urls: dict[str, list[str]] = {}
        for name, service in self.services.items():
            if service.health_url is not None:
                urls.setdefault(self._kinds[name], []).append(service.health_url.rsplit("/", 1)[0] + "/metrics")
        return urls

    def stage_collector_env(self) -> dict[str, str]:
        """The stage collector's ``TSDEMO_*_METRICS_URLS``: the services running now."""
        from storage.stages import collector_env

        return collector_env(self.metrics_urls())

    def init_storage(self) -> str:
        """``tsdemo storage init``: the database, retention policies and continuous queries; its output."""
        return self.run(COMPONENTS["storage-init"].command).stdout

    def stop(self, say: object = None) -> dict[str, int | None]:
        """Every service, the last started first; their exit statuses."""
        report = say if callable(say) else (lambda _m: None)
        statuses = {}
        for name in reversed(list(self.services)):
            report(f"stopping {name} ...")
            statuses[name] = self.services[name].stop(STOP_TIMEOUT_S.get(self._kinds[name], 60.0))
        return statuses
