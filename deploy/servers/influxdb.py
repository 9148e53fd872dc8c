"""InfluxDB 1.x (the Debian package) as a child process, with its RPC port moved off the default when taken."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from deploy.servers.base import ManagedServer, client_host, free_port, port_is_free

INFLUXD_BIN = "/usr/bin/influxd"


class InfluxDB(ManagedServer):
    """InfluxDB 1.x (1.6 on Debian) with HTTP on ``port`` and its RPC (backup) port moved off 8088.

    ``rpc_port`` defaults to ``port + 2`` (8086 -> 8088, influxd's own default) when that is free,
    else to any free port, so two instances on one machine do not clash.
    """

    name = "influxdb"
    ready_timeout = 30.0

    def __init__(
        self,
        state_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        *,
        rpc_port: int | None = None,
        cq_run_interval: str = "1s",
        log_level: str = "info",
    ) -> None:
        super().__init__(state_dir, port, host)
        self.rpc_port = rpc_port
        self.cq_run_interval = cq_run_interval
        self.log_level = log_level
        self.config_path = self.state_dir / "influxdb.conf"

    @property
    def endpoint(self) -> str:
        return f"http://{client_host(self.host)}:{self.port}"

    @property
    def console_log(self) -> Path:
        # influxd 1.x can only log to stderr, so its console output is its log.
        return self.state_dir / "influxdb.log"

    def _ports(self) -> list[int]:
        if self.rpc_port is None:  # chosen here, before the port check, and kept for restarts
            derived = self.port + 2
            free = derived < 65536 and port_is_free(derived, self.host)
            self.rpc_port = derived if free else free_port(self.host)
        return [self.port, self.rpc_port]

    def _prepare(self) -> None:
        for sub in ("meta", "data", "wal"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            f"""# written by deploy.servers on every start; edits are lost
reporting-disabled = true
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{self.state_dir / "meta"}"

[data]
  dir = "{self.state_dir / "data"}"
  wal-dir = "{self.state_dir / "wal"}"
  query-log-enabled = true

[monitor]
  # the _internal database would grow on every start and show up in SHOW DATABASES
  store-enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  auth-enabled = false
  # a line per write request would drown everything else at the demo's rates
  log-enabled = false

[continuous_queries]
  enabled = true
  log-enabled = true
  run-interval = "{self.cq_run_interval}"

[logging]
  format = "logfmt"
  level = "{self.log_level}"
  suppress-logo = true
"""
        )

    def _command(self) -> list[str]:
        return [INFLUXD_BIN, "-config", str(self.config_path)]

    def _probe(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/ping", timeout=2) as resp:
                return resp.status == 204
        except urllib.error.URLError:
            return False
