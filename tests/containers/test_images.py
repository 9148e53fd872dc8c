"""Each image as built: its user, its HEALTHCHECK, and the one-shot jobs run to completion.

storage-init runs against the session's native InfluxDB; dashboards-init against a replay of Grafana's
HTTP API (tests/fixtures/grafana, as in tests/unit/dashboards/test_dashboards_provisioning.py): no Grafana server exists
on these machines.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
import urllib.request
from http.server import ThreadingHTTPServer

import pytest

from tests.containers.runtime import JOBS, SERVICES, UID, container, image, logs, wait_exit
from tests.support.grafana_replay import AUTH, Replay, handler


@pytest.mark.parametrize("name", SERVICES + JOBS)
def test_image_runs_as_its_own_non_root_user_and_says_how_its_health_is_known(engine, name):
    config = engine.images.get(image(name)).attrs["Config"]
    assert config["User"] == f"{UID}:{UID}", config["User"]
    test = (config.get("Healthcheck") or {}).get("Test")
    if name in SERVICES:
        assert test and test[0] == "CMD" and "healthcheck.py" in " ".join(test), test
        assert config["Env"] and "TSDEMO_HEALTH_PORT=8080" in config["Env"], config["Env"]
    else:
        assert test == ["NONE"], test  # a one-shot job: its exit code is its health
    # The image's own entrypoint and user: the command's --help works and the process is not root.
    out = engine.containers.run(image(name), ["--help"], remove=True, network_mode="none")
    assert b"usage:" in out.lower(), out[:300]
    ids = engine.containers.run(image(name), ["-c", "import os; print(os.getuid())"], entrypoint="python",
                                remove=True, network_mode="none")
    assert ids.split() == [str(UID).encode()], ids


def _influx_query(url: str, q: str) -> dict:
    with urllib.request.urlopen(f"{url}/query?{urllib.parse.urlencode({'q': q})}", timeout=10) as resp:
        return json.load(resp)


def test_storage_init_creates_the_database_against_the_native_influxdb(engine, influxdb, started):
    database = "iot_containers_storage_init"
    c = started(container("storage-init", {"TSDEMO_INFLUX_URL": influxdb.endpoint,
                                           "TSDEMO_INFLUX_DATABASE": database}))
    code = wait_exit(c, timeout=180)
    assert code == 0, logs(c)
    names = [row[0] for s in _influx_query(influxdb.endpoint, "SHOW DATABASES")["results"][0]["series"]
             for row in s["values"]]
    assert database in names, names
    policies = _influx_query(influxdb.endpoint, f'SHOW RETENTION POLICIES ON "{database}"')
    assert len(policies["results"][0]["series"][0]["values"]) >= 2, policies
    # Run again: idempotent, still exit 0.
    again = started(container("storage-init", {"TSDEMO_INFLUX_URL": influxdb.endpoint,
                                               "TSDEMO_INFLUX_DATABASE": database}))
    assert wait_exit(again, timeout=180) == 0, logs(again)


def test_dashboards_init_provisions_everything_through_grafanas_api(engine, started):
    replay = Replay("fresh", AUTH)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(replay))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        c = started(container("dashboards-init", {
            "TSDEMO_GRAFANA_URL": f"http://127.0.0.1:{server.server_address[1]}",
            "TSDEMO_GRAFANA_USER": "admin", "TSDEMO_GRAFANA_PASSWORD": "s3cret",
            # What the recording expects the datasource to point at (the compose file's values).
            "TSDEMO_INFLUX_URL": "http://influxdb:8086", "TSDEMO_INFLUX_DATABASE": "iot",
        }))
        code = wait_exit(c, timeout=180)
        assert code == 0, logs(c)
        replay.check_complete()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
