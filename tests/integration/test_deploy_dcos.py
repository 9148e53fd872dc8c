"""deploy/dcos (legacy): the Marathon group and pod definitions are valid Marathon definitions, run the
same images and settings as the other ways, and keep each bridge's MQTT client id fixed."""

from __future__ import annotations

import copy
import json

from tests.support.validate import marathon as M
from tests.support.validate.compose import COMPOSE_DIR, read_dotenv

VERSIONS = read_dotenv(COMPOSE_DIR / ".env")


def load(name: str) -> dict:
    return json.loads((M.DCOS_DIR / name).read_text())


def test_group_is_a_valid_marathon_group():
    assert M.problems(load("tsdemo-group.json"), "group") == []


def test_pod_is_a_valid_marathon_pod():
    assert M.problems(load("processing-pod.json"), "pod") == []


def test_marathon_validation_can_fail():
    group = load("tsdemo-group.json")
    app = copy.deepcopy(group["apps"][0])
    app["instance"] = 2
    assert M.problems(app, "app")
    group["apps"][1]["container"]["docker"].pop("image")
    assert M.problems(group, "group")  # the group's apps are checked against the app schema
    pod = load("processing-pod.json")
    pod["containers"][0]["resources"] = {"cpus": 1}
    assert M.problems(pod, "pod")


def test_same_images_as_compose_and_fixed_bridge_client_ids():
    group, pod = load("tsdemo-group.json"), load("processing-pod.json")
    images = {a["container"]["docker"]["image"] for a in group["apps"]}
    images |= {c["image"]["id"] for c in pod["containers"]}
    for var in ("MOSQUITTO_IMAGE", "INFLUXDB_IMAGE", "GRAFANA_IMAGE"):
        assert VERSIONS[var] in images, var
    for name in ("generator", "ingest", "processing"):
        assert f"tsdemo/{name}:{VERSIONS['TSDEMO_TAG']}" in images, name
    bridges = [a for a in group["apps"] if a["id"].startswith("ingest-")]
    ids = [a["env"]["TSDEMO_CLIENT_ID"] for a in bridges]
    assert len(bridges) >= 2 and len(set(ids)) == len(ids) and all(a["instances"] == 1 for a in bridges)
    assert group["labels"]["legacy"] == "true" and pod["labels"]["legacy"] == "true"
