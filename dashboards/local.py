"""Grafana for the local stack (``tsdemo up``): find a Grafana server on PATH and the command line and
environment that run it on the generated provisioning tree, with its state under the stack's directory.

Nothing is installed here: without a Grafana on PATH the stack runs without dashboards, and
``missing_message`` says how to get one.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from dashboards import datasource
from dashboards.conventions import FLEET_UID
from dashboards.settings import COMMITTED
from servicekit.contract.influx import INFLUX_DATABASE

DEFAULT_PORT = 3000
# Where distributions put Grafana's home (conf/, public/) when the binary is not inside it.
_HOMES = (Path("/usr/share/grafana"), Path("/usr/local/share/grafana"), Path("/opt/homebrew/share/grafana"))


@dataclass(frozen=True)
class GrafanaInstall:
    binary: Path
    homepath: Path
    #: ``grafana-server`` (before Grafana 9.4 added ``grafana server``) takes no subcommand
    legacy: bool


def _home_of(binary: Path) -> Path | None:
    # A release tarball keeps the binary in <home>/bin; packages put home under /usr/share.
    for home in (binary.resolve().parent.parent, *_HOMES):
        if (home / "conf" / "defaults.ini").is_file():
            return home
    return None


def find_grafana(path: str | None = None) -> GrafanaInstall | None:
    """The Grafana server on ``path`` (default: ``$PATH``) with its home directory, or None."""
    for name, legacy in (("grafana", False), ("grafana-server", True)):
        found = shutil.which(name, path=path)
        if found:
            home = _home_of(Path(found))
            if home is not None:
                return GrafanaInstall(Path(found), home, legacy)
    return None


def grafana_command(
    install: GrafanaInstall,
    state_dir: Path,
    *,
    provisioning_dir: Path = COMMITTED,
    port: int = DEFAULT_PORT,
    host: str = "127.0.0.1",
    influx_url: str = "http://127.0.0.1:8086",
    influx_database: str = INFLUX_DATABASE,
    admin_password: str = "admin",
) -> tuple[list[str], dict[str, str]]:
    """``(argv, environment additions)`` to run Grafana with the provisioning tree.

    Grafana keeps its database, logs and plugins in ``state_dir``; anonymous visitors may view the
    dashboards (a local demo), the admin logs in with ``admin_password``. Merge the environment into
    ``os.environ`` when starting the process.
    """
    state_dir = Path(state_dir).resolve()
    provisioning_dir = Path(provisioning_dir).resolve()
    argv = [str(install.binary)] + ([] if install.legacy else ["server"]) + ["--homepath", str(install.homepath)]
    env = {
        "GF_PATHS_PROVISIONING": str(provisioning_dir),
        "GF_PATHS_DATA": str(state_dir / "data"),
        "GF_PATHS_LOGS": str(state_dir / "logs"),
        "GF_PATHS_PLUGINS": str(state_dir / "plugins"),
        "GF_SERVER_HTTP_ADDR": host,
        "GF_SERVER_HTTP_PORT": str(port),
        "GF_SECURITY_ADMIN_USER": "admin",
        "GF_SECURITY_ADMIN_PASSWORD": admin_password,
        "GF_AUTH_ANONYMOUS_ENABLED": "true",
        "GF_AUTH_ANONYMOUS_ORG_ROLE": "Viewer",
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH": str(provisioning_dir / "dashboards" / f"{FLEET_UID}.json"),
        "GF_ANALYTICS_REPORTING_ENABLED": "false",
        "GF_ANALYTICS_CHECK_FOR_UPDATES": "false",
        "GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES": "false",
        "GF_LOG_MODE": "console",
        # What the datasource provisioning file expands (see dashboards/datasource.py).
        datasource.ENV_URL: influx_url,
        datasource.ENV_DATABASE: influx_database,
        datasource.ENV_USERNAME: os.environ.get(datasource.ENV_USERNAME, ""),
        datasource.ENV_PASSWORD: os.environ.get(datasource.ENV_PASSWORD, ""),
    }
    return argv, env


def health_url(port: int = DEFAULT_PORT, host: str = "127.0.0.1") -> str:
    """Answers 200 with ``"database": "ok"`` once Grafana serves."""
    return f"http://{host}:{port}/api/health"


def missing_message(port: int = DEFAULT_PORT) -> str:
    """What ``tsdemo up`` prints when no Grafana server is on PATH."""
    return (
        "no Grafana server on PATH (looked for `grafana` and `grafana-server` with their conf/defaults.ini), so "
        "the stack runs without dashboards. To get Grafana:\n"
        "  * Debian/Ubuntu: add Grafana's APT repository (https://apt.grafana.com, see "
        "https://grafana.com/docs/grafana/latest/setup-grafana/installation/debian/) and "
        "`apt-get install grafana`; its binary is /usr/sbin/grafana (add /usr/sbin to PATH)\n"
        "  * any Linux: unpack the standalone tarball from https://grafana.com/grafana/download and put its "
        "bin/ directory on PATH\n"
        "  * or run it in a container on the generated provisioning:\n"
        f"      docker run --rm --network host -e GF_SERVER_HTTP_PORT={port} "
        "-e TSDEMO_INFLUX_URL=http://127.0.0.1:8086 -e TSDEMO_INFLUX_DATABASE=iot "
        "-v \"$PWD/dashboards/provisioning:/etc/grafana/provisioning:ro\" grafana/grafana-oss\n"
        "  then run `tsdemo up` again, or point `tsdemo dashboards provision --grafana-url URL` at a Grafana "
        "you already have."
    )
