"""Grafana in the local stack, when a Grafana server is installed: the generated provisioning tree,
state under the stack's directory (see dashboards.local for the command line and environment)."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

from dashboards.local import GrafanaInstall, grafana_command, health_url
from deploy.servers import ManagedServer


class Grafana(ManagedServer):
    name = "grafana"
    ready_timeout = 120.0

    def __init__(self, install: GrafanaInstall, state_dir: Path, port: int, influx_url: str,
                 host: str = "127.0.0.1") -> None:
        super().__init__(state_dir, port, host)
        self.argv, self.extra_env = grafana_command(install, self.state_dir, port=port, host=host,
                                                    influx_url=influx_url)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _prepare(self) -> None:
        for sub in ("data", "logs", "plugins"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)

    def _command(self) -> list[str]:
        return self.argv

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.extra_env}

    def _probe(self) -> bool:
        with urllib.request.urlopen(health_url(self.port, self.host), timeout=2) as resp:  # noqa: S310
            return resp.status == 200
