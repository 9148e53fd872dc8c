"""deploy/kubernetes: every kustomization renders, and every object is valid against its API schema (built-in
kinds for the oldest and newest Kubernetes we claim, Strimzi and Spark Operator CRs against their CRD
schemas), plus the rules of the house: restricted security context, requests and limits, probes, stable
bridge client ids, pins from the one env file, provisioning from exactly dashboards/provisioning."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from deploy.validate import kubernetes as K
from deploy.validate.compose import COMPOSE_DIR, REPO, read_dotenv

pytestmark = pytest.mark.integration

# AKS's oldest supported minor when this was written, and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ["1.31.0", "latest"]
VERSIONS = read_dotenv(COMPOSE_DIR / ".env")
COMPONENTS = sorted(p.name for p in (K.KUSTOMIZE_DIR / "components").iterdir() if p.is_dir())
WORKLOADS = ("Deployment", "StatefulSet", "Job")


def _version(v: str) -> str:
    import kubernetes_validate

    return kubernetes_validate.latest_version() if v == "latest" else v


def render_with(tmp_path: Path, resources: list[str], components: list[str], extra: str = "") -> list[dict]:
    """A throwaway kustomization beside nothing of ours; paths relative, as kustomize requires."""
    rel = os.path.relpath(K.KUSTOMIZE_DIR, tmp_path)
    lines = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization", "resources:"]
    lines += [f"  - {rel}/{r}" for r in resources]
    if components:
        lines += ["components:"] + [f"  - {rel}/components/{c}" for c in components]
    (tmp_path / "kustomization.yaml").write_text("\n".join(lines) + "\n" + extra)
    return K.render(tmp_path)


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return K.render(K.KUSTOMIZE_DIR / "base")


@pytest.fixture(scope="module")
def everything(tmp_path_factory) -> list[dict]:
    return render_with(tmp_path_factory.mktemp("all"), ["base"], COMPONENTS)


@pytest.fixture(scope="module")
def aks_overlay(tmp_path_factory) -> list[dict]:
    # The overlay as committed, next to a credentials.env like the one an operator writes (git-ignored).
    work = tmp_path_factory.mktemp("aks")
    rel = os.path.relpath(K.KUSTOMIZE_DIR, work)
    text = (K.KUSTOMIZE_DIR / "overlays/aks/kustomization.yaml").read_text().replace("../../", f"{rel}/")
    (work / "kustomization.yaml").write_text(text)
    (work / "credentials.env").write_text("influxdb-admin-user=u\ninfluxdb-admin-password=p\n"
                                          "grafana-admin-user=a\ngrafana-admin-password=q\n")
    return K.render(work)


def problems(docs: list[dict]) -> list[str]:
    return [f"[{v}] {p}" for v in K8S_VERSIONS for d in docs for p in K.validate(d, _version(v))]


def test_base_is_valid(base):
    assert problems(base) == []


def test_base_with_every_component_is_valid(everything):
    assert problems(everything) == []


def test_aks_overlay_is_valid_and_uses_azure_storage(aks_overlay):
    assert problems(aks_overlay) == []
    claims = {d["metadata"]["name"]: d["spec"].get("storageClassName") for d in aks_overlay
              if d["kind"] == "PersistentVolumeClaim"}
    assert claims["spark-checkpoints"] == "azurefile-csi"  # ReadWriteMany: every executor writes state
    spark = next(d for d in aks_overlay if d["kind"] == "SparkApplication")
    assert spark["spec"]["image"].startswith("tsdemoacr.azurecr.io/tsdemo/processing:")  # kustomizeconfig.yaml
    secret = next(d for d in aks_overlay if d["kind"] == "Secret")
    assert secret["metadata"]["name"].startswith("tsdemo-credentials-")


def test_validation_can_fail(base):
    topic = copy.deepcopy(next(d for d in base if d["kind"] == "KafkaTopic"))
    topic["spec"]["partitons"] = 3
    app = copy.deepcopy(next(d for d in base if d["kind"] == "SparkApplication"))
    app["spec"]["driver"]["memroy"] = "1g"
    sts = copy.deepcopy(next(d for d in base if d["kind"] == "StatefulSet"))
    sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = {"x": 1}
    for doc in (topic, app, sts):
        assert K.validate(doc, _version("latest")), doc["kind"]


def _pods(docs: list[dict]):
    """(where, pod spec) of every workload, Spark's driver and executor included."""
    for d in docs:
        if d["kind"] in WORKLOADS:
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]
        elif d["kind"] == "SparkApplication":
            for role in ("driver", "executor"):
                spec = d["spec"][role]
                container = {"name": role, "securityContext": spec["securityContext"]}
                yield f"SparkApplication/{role}", {"securityContext": spec["podSecurityContext"],
                                                    "containers": [container]}


def test_every_pod_runs_restricted(everything):
    for where, pod in _pods(everything):
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in pod["containers"] + pod.get("initContainers", []):
            csc = c["securityContext"]
            assert csc["allowPrivilegeEscalation"] is False and csc["capabilities"]["drop"] == ["ALL"], where
            # Spark is the documented exception (its Ivy and spark-submit write into the image).
            assert csc["readOnlyRootFilesystem"] is True or where.startswith("SparkApplication"), where


def test_every_container_has_requests_limits_and_services_have_probes(everything):
    for d in everything:
        if d["kind"] not in WORKLOADS:
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            res = c["resources"]
            assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"]), c["name"]
            if d["kind"] != "Job":
                assert "readinessProbe" in c and "livenessProbe" in c, c["name"]


def test_bridges_have_stable_distinct_client_ids_and_only_scale_up(base):
    ingest = next(d for d in base if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "ingest")
    env = {e["name"]: e for e in ingest["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TSDEMO_CLIENT_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    hpa = next(d for d in base if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "ingest"}
    assert hpa["spec"]["behavior"]["scaleDown"]["selectPolicy"] == "Disabled"


def test_grafana_provisioning_comes_from_exactly_the_dashboards_folder(base):
    folder = REPO / "dashboards" / "provisioning"
    expected = {p.relative_to(folder).parts[0]: set() for p in folder.iterdir() if p.is_dir()}
    for p in folder.rglob("*"):
        if p.is_file():
            expected[p.relative_to(folder).parts[0]].add(p.name)
    maps = {d["metadata"]["name"]: d for d in base if d["kind"] == "ConfigMap"}
    for sub, files in expected.items():
        cm = next(m for name, m in maps.items() if name.startswith(f"grafana-{sub}-"))
        assert set(cm["data"]) == files, sub
        for name in files:
            assert cm["data"][name] == (folder / sub / name).read_text(), name


def test_no_credentials_are_committed(base):
    secret = next(d for d in base if d["kind"] == "Secret")
    import base64

    values = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert all(v == "CHANGE_ME" for k, v in values.items() if "password" in k), values
    assert (K.KUSTOMIZE_DIR / ".gitignore").read_text().split().count("credentials.env") == 1


def test_versions_come_from_the_env_file(everything):
    images = {c["image"] for d in everything if d["kind"] in WORKLOADS
              for c in d["spec"]["template"]["spec"]["containers"]}
    for var in ("MOSQUITTO_IMAGE", "INFLUXDB_IMAGE", "GRAFANA_IMAGE"):
        assert VERSIONS[var] in images, var
    ours = {i for i in images if i.startswith("tsdemo/")}
    assert ours and all(i.endswith(f":{VERSIONS['TSDEMO_TAG']}") for i in ours), ours
    kafka = next(d for d in everything if d["kind"] == "Kafka")
    assert kafka["spec"]["kafka"]["version"] == VERSIONS["KAFKA_IMAGE"].rsplit(":", 1)[1]
    spark = next(d for d in everything if d["kind"] == "SparkApplication")
    assert spark["spec"]["sparkVersion"] == VERSIONS["SPARK_VERSION"]
    assert spark["spec"]["image"] == f"tsdemo/processing:{VERSIONS['TSDEMO_TAG']}"
    assert (K.SCHEMAS / f"strimzi-{VERSIONS['STRIMZI_VERSION']}").is_dir()
