"""deploy/kubernetes: every kustomization renders, and every object is valid against its API schema (built-in
kinds for the oldest and newest Kubernetes we claim, Strimzi and Spark Operator CRs against their CRD
schemas), plus the rules of the house: restricted security context, requests and limits, probes, stable
bridge client ids, pins from the one env file, provisioning from exactly dashboards/provisioning."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from tests.support.validate import kubernetes as K
from tests.support.validate.compose import COMPOSE_DIR, REPO, read_dotenv

# AKS's oldest supported minor when this was written, and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ["1.31.0", "latest"]
VERSIONS = read_dotenv(COMPOSE_DIR / ".env")
COMPONENTS = sorted(p.name for p in (K.KUSTOMIZE_DIR / "components").iterdir() if p.is_dir())
WORKLOADS = ("Deployment", "StatefulSet", "Job")
PLACEHOLDERS = K.KUSTOMIZE_DIR / "base" / "credentials.placeholder.env"


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
    # Every key of the placeholder file, with values of its own (the overlay replaces the Secret whole).
    keys = [line.split("=", 1)[0] for line in PLACEHOLDERS.read_text().splitlines() if "=" in line]
    (work / "credentials.env").write_text("".join(f"{k}=v{i}\n" for i, k in enumerate(keys)))
    return K.render(work)


def problems(docs: list[dict]) -> list[str]:
    return [f"[{v}] {p}" for v in K8S_VERSIONS for d in docs for p in K.validate(d, _version(v))]


def test_base_is_valid(base):
    assert problems(base) == []


def test_base_with_every_component_is_valid(everything):
    assert problems(everything) == []


def test_aks_overlay_is_valid_and_uses_azure_storage(aks_overlay):
    keys = [line.split("=", 1)[0] for line in PLACEHOLDERS.read_text().splitlines() if "=" in line]
    assert problems(aks_overlay) == []
    claims = {d["metadata"]["name"]: d["spec"].get("storageClassName") for d in aks_overlay
              if d["kind"] == "PersistentVolumeClaim"}
    assert claims["spark-checkpoints"] == "azurefile-csi"  # ReadWriteMany: every executor writes state
    spark = next(d for d in aks_overlay if d["kind"] == "SparkApplication")
    assert spark["spec"]["image"].startswith("tsdemoacr.azurecr.io/tsdemo/processing:")  # kustomizeconfig.yaml
    secret = next(d for d in aks_overlay if d["kind"] == "Secret")
    assert secret["metadata"]["name"] == "tsdemo-credentials" and set(secret["data"]) == set(keys)


def test_validation_can_fail(base):
    topic = copy.deepcopy(next(d for d in base if d["kind"] == "KafkaTopic"))
    topic["spec"]["partitons"] = 3
    app = copy.deepcopy(next(d for d in base if d["kind"] == "SparkApplication"))
    app["spec"]["driver"]["memroy"] = "1g"
    sts = copy.deepcopy(next(d for d in base if d["kind"] == "StatefulSet"))
    sts["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = {"x": 1}
    user = copy.deepcopy(next(d for d in base if d["kind"] == "KafkaUser"))
    user["spec"]["authorization"]["acls"][0]["operations"] = ["Wirte"]
    docs = [topic, app, sts, user]
    with open(K.KUSTOMIZE_DIR / "components/mqtt-tls/certificates.yaml") as f:
        import yaml

        cert = next(d for d in yaml.safe_load_all(f) if d["kind"] == "Certificate")
    cert["spec"]["dnsName"] = ["mosquitto"]
    docs.append(cert)
    for doc in docs:
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


def _workload(docs: list[dict], kind: str, name: str) -> dict:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_bridges_have_stable_distinct_client_ids_and_retire_when_scaled_down(base):
    ingest = _workload(base, "StatefulSet", "ingest")
    pod = ingest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = _env(container)
    assert env["TSDEMO_CLIENT_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    hpa = next(d for d in base if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "ingest"}
    # The autoscaler scales down, one bridge at a time, each retiring through the preStop hook.
    down = hpa["spec"]["behavior"]["scaleDown"]
    assert down.get("selectPolicy") != "Disabled" and down["policies"] == [{"type": "Pods", "value": 1,
                                                                             "periodSeconds": 300}]
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["python", "/opt/tsdemo-hooks/bridge-prestop.py"]
    hooks = next(v for v in pod["volumes"] if v["name"] == "hooks")["configMap"]["name"]
    hook = next(d for d in base if d["kind"] == "ConfigMap" and d["metadata"]["name"] == hooks)
    assert hook["data"]["bridge-prestop.py"] == (K.KUSTOMIZE_DIR / "base/bridge-prestop.py").read_text()
    assert {"mountPath": "/opt/tsdemo-hooks", "name": "hooks", "readOnly": True} in container["volumeMounts"]
    # The grace period covers the drain the bridge may take, plus the hook and the exit.
    assert pod["terminationGracePeriodSeconds"] >= float(env["TSDEMO_RETIRE_TIMEOUT_S"]["value"]) + 30
    # The hook may read the StatefulSet, nothing else.
    assert pod["serviceAccountName"] == "ingest" and pod["automountServiceAccountToken"] is True
    role = _workload(base, "Role", "ingest-scale-reader")
    assert role["rules"] == [{"apiGroups": ["apps"], "resources": ["statefulsets"], "resourceNames": ["ingest"],
                              "verbs": ["get"]}]
    binding = _workload(base, "RoleBinding", "ingest-scale-reader")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ingest", "namespace": "tsdemo"}]


def _secret_refs(docs: list[dict]):
    """(where, secret name, key or None) for every Secret a pod reads, Spark's driver and executors too."""
    for d in docs:
        if d["kind"] in WORKLOADS:
            spec = d["spec"]["template"]["spec"]
            pods = [(f"{d['kind']}/{d['metadata']['name']}", spec.get("volumes", []),
                     spec["containers"] + spec.get("initContainers", []))]
        elif d["kind"] == "SparkApplication":
            spec = d["spec"]
            pods = [(f"SparkApplication/{role}", spec.get("volumes", []), [spec[role]]) for role in ("driver",
                                                                                                    "executor")]
        else:
            continue
        for where, volumes, containers in pods:
            for v in volumes:
                if "secret" in v:
                    for item in v["secret"].get("items") or [{"key": None}]:
                        yield where, v["secret"]["secretName"], item["key"]
            for c in containers:
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        yield where, ref["name"], ref["key"]


def test_every_secret_a_pod_reads_is_made_by_the_manifests_or_their_operators(everything):
    made: dict[str, set[str]] = {}  # Secret name -> its keys
    for d in everything:
        if d["kind"] == "Secret":  # kustomize appends a hash to generated names; references follow it
            made[d["metadata"]["name"]] = set(d["data"])
        elif d["kind"] == "KafkaUser":
            made[d["metadata"]["name"]] = {"password", "sasl.jaas.config"}
        elif d["kind"] == "Kafka":
            made[f"{d['metadata']['name']}-cluster-ca-cert"] = {"ca.crt", "ca.p12", "ca.password"}
        elif d["kind"] == "Certificate":
            made[d["spec"]["secretName"]] = {"ca.crt", "tls.crt", "tls.key"}
    refs = list(_secret_refs(everything))
    assert {name for _, name, _ in refs} >= {"tsdemo-bridge", "tsdemo-processing", "mosquitto-tls"}
    for where, name, key in refs:
        assert name in made, f"{where} reads Secret {name}, which nothing makes"
        assert key is None or key in made[name], f"{where} reads {name}/{key}; it has {sorted(made[name])}"
    # Every credential of the generated Secret is used by someone.
    assert made["tsdemo-credentials"] == {key for _, name, key in refs if name == "tsdemo-credentials"}


def test_mqtt_clients_sign_in_and_the_broker_writes_its_password_and_acl_files_from_the_secret(everything):
    broker = _workload(everything, "StatefulSet", "mosquitto")["spec"]["template"]["spec"]
    (init,) = broker["initContainers"]
    assert init["command"] == ["/bin/sh", "/mosquitto/config/mqtt-auth.sh"]
    config = next(d for d in everything if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith(
        "mosquitto-config-"))
    mosquitto_dir = REPO / "deploy/compose/mosquitto"
    assert config["data"] == {n: (mosquitto_dir / n).read_text() for n in ("mosquitto.conf", "mqtt-auth.sh")}
    assert "\nallow_anonymous false\n" in config["data"]["mosquitto.conf"]
    assert _env(init)["MQTT_TLS_DIR"]["value"] == "/mosquitto/tls"  # components/mqtt-tls
    probe = broker["containers"][0]["livenessProbe"]["exec"]["command"]
    assert probe[:2] == ["env", "XDG_CONFIG_HOME=/mosquitto/auth/health"]
    users = {"ingest": "tsdemo-bridge", "generator": "tsdemo-fleet", "generator-large": "tsdemo-fleet"}
    for name, user in users.items():
        kind = "StatefulSet" if name == "ingest" else "Deployment"
        env = _env(_workload(everything, kind, name)["spec"]["template"]["spec"]["containers"][0])
        assert env["TSDEMO_MQTT_USERNAME"]["value"] == user, name
        assert env["TSDEMO_MQTT_PASSWORD_FILE"]["value"].startswith("/run/secrets/"), name
    issued = next(d for d in everything if d["kind"] == "Certificate" and d["metadata"]["name"] == "mosquitto-tls")
    assert "mosquitto" in issued["spec"]["dnsNames"]


def test_kafka_takes_only_scram_over_tls_and_each_client_is_a_kafka_user_with_its_own_acls(base):
    kafka = next(d for d in base if d["kind"] == "Kafka")["spec"]["kafka"]
    assert [(lsn["tls"], lsn["authentication"]["type"]) for lsn in kafka["listeners"]] == [(True, "scram-sha-512")]
    assert kafka["authorization"]["type"] == "simple"
    users = {d["metadata"]["name"]: d["spec"] for d in base if d["kind"] == "KafkaUser"}

    def allowed(user: str) -> set[tuple[str, str, str]]:
        return {(a["resource"]["type"], a["resource"].get("name", ""), op)
                for a in users[user]["authorization"]["acls"] for op in a["operations"]}

    assert all(u["authentication"]["type"] == "scram-sha-512" for u in users.values())
    bridge, job = allowed("tsdemo-bridge"), allowed("tsdemo-processing")
    assert ("topic", "sensor-readings", "Write") in bridge and not any(op == "Read" for _, _, op in bridge)
    assert {("topic", "sensor-readings", "Read"), ("topic", "sensor-readings-dlq", "Write")} <= job
    assert ("topic", "sensor-readings", "Write") not in job
    clients = {"tsdemo-bridge": _workload(base, "StatefulSet", "ingest")["spec"]["template"]["spec"]["containers"][0],
               "tsdemo-processing": next(d for d in base if d["kind"] == "SparkApplication")["spec"]["driver"]}
    for user, container in clients.items():
        env = {k: e.get("value") for k, e in _env(container).items()}
        assert env["TSDEMO_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL" and env["TSDEMO_KAFKA_SASL_MECHANISM"] == \
            "SCRAM-SHA-512", user
        assert env["TSDEMO_KAFKA_SASL_USERNAME"] == user and env["TSDEMO_KAFKA_BOOTSTRAP"].endswith(":9093"), user
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert mounts[env["TSDEMO_KAFKA_SASL_PASSWORD_FILE"].rsplit("/", 1)[0]] == "kafka-credentials", user


def test_influxdb_auth_is_on_and_the_job_and_grafana_use_their_own_users(base):
    influx = _env(_workload(base, "StatefulSet", "influxdb")["spec"]["template"]["spec"]["containers"][0])
    assert influx["INFLUXDB_HTTP_AUTH_ENABLED"]["value"] == "true"
    key = {name: influx[name]["valueFrom"]["secretKeyRef"]["key"] for name in
           ("INFLUXDB_ADMIN_USER", "INFLUXDB_USER", "INFLUXDB_READ_USER")}
    assert key == {"INFLUXDB_ADMIN_USER": "influxdb-admin-user", "INFLUXDB_USER": "influxdb-processing-user",
                   "INFLUXDB_READ_USER": "influxdb-grafana-user"}
    driver = _env(next(d for d in base if d["kind"] == "SparkApplication")["spec"]["driver"])
    assert driver["TSDEMO_INFLUX_USERNAME"]["valueFrom"]["secretKeyRef"]["key"] == "influxdb-processing-user"
    grafana = _env(_workload(base, "Deployment", "grafana")["spec"]["template"]["spec"]["containers"][0])
    assert grafana["TSDEMO_INFLUX_USERNAME"]["valueFrom"]["secretKeyRef"]["key"] == "influxdb-grafana-user"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "grafana-admin-password"
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"]["value"] == "false"


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
