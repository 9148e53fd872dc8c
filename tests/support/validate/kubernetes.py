"""Renders deploy/kubernetes with kustomize and validates every object against its API schema.

- Built-in kinds: kubernetes-validate's schemas (strict: unknown fields are errors, as with
  `kubectl apply --validate=strict`).
- Strimzi (kafka.strimzi.io): the CRD schemas vendored in schemas/strimzi-<version>/ (gen_strimzi_schemas.py).
- cert-manager (cert-manager.io): the CRD schemas vendored in schemas/cert-manager-<version>/
  (gen_certmanager_schemas.py).
- SparkApplication (sparkoperator.k8s.io/v1beta2): the JSON schema of the Spark Operator's own API models
  (PyPI kubeflow-spark-api).
CRD schemas get ``additionalProperties: false`` wherever they list properties and allow nothing else, so
a misspelt field fails here instead of being pruned silently by the API server.
"""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any

from tests.support.validate import tools
from tests.support.validate.compose import COMPOSE_DIR, read_dotenv

KUSTOMIZE_DIR = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes"
SCHEMAS = Path(__file__).resolve().parent / "schemas"


def render(path: Path) -> list[dict[str, Any]]:
    """``kustomize build`` of ``path``. LoadRestrictionsNone: the Grafana provisioning ConfigMaps and the
    Mosquitto config are generated from files outside deploy/kubernetes (dashboards/provisioning,
    deploy/compose/mosquitto), read in place rather than copied."""
    import yaml

    out = subprocess.run(
        [tools.find("kustomize"), "build", "--load-restrictor", "LoadRestrictionsNone", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    if out.returncode != 0:
        raise AssertionError(f"kustomize build {path} failed:\n{out.stderr}")
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def _closed(node: Any) -> Any:
    """``additionalProperties: false`` on every object schema that lists properties and says nothing else."""
    if isinstance(node, list):
        return [_closed(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _closed(v) for k, v in node.items()}
    if ("properties" in node and "additionalProperties" not in node and "patternProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        node["additionalProperties"] = False
    return node


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> JSON schema for the custom resources the manifests use."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    pins = read_dotenv(COMPOSE_DIR / ".env")
    vendored = [SCHEMAS / f"strimzi-{pins['STRIMZI_VERSION']}",
                SCHEMAS / f"cert-manager-{pins['CERT_MANAGER_VERSION']}"]
    for path in sorted(p for d in vendored for p in d.glob("*.json")):
        schema = json.loads(path.read_text())
        group, version, kind = schema["x-group-version-kind"]
        schema = _closed(schema)
        # The CRD leaves metadata open; the API server checks it like any object's.
        schema["properties"]["metadata"] = {"type": "object"}
        schemas[(f"{group}/{version}", kind)] = schema
    from kubeflow_spark_api.models.spark_v1beta2_spark_application import SparkV1beta2SparkApplication

    spark = _closed(SparkV1beta2SparkApplication.model_json_schema(by_alias=True, mode="validation"))
    schemas[("sparkoperator.k8s.io/v1beta2", "SparkApplication")] = spark
    return schemas


def validate(doc: dict[str, Any], k8s_version: str) -> list[str]:
    """Problems with one object (empty when it is valid)."""
    import jsonschema
    import kubernetes_validate

    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    where = f"{key[1]}/{doc.get('metadata', {}).get('name', '?')}"
    if key in crd_schemas():
        validator = jsonschema.Draft202012Validator(crd_schemas()[key])
        return [f"{where}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]
    try:
        kubernetes_validate.validate(doc, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{where}: {'.'.join(map(str, exc.path)) or '<root>'}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{where}: no schema for {key[0]} {key[1]} "
                "(a custom resource? add its schema to tests/support/validate)"]
    return []
