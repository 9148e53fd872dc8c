"""No credential is committed: every file git tracks is scanned with detect-secrets (Yelp's scanner: keywords
such as password=..., private keys, cloud tokens, high-entropy strings), plus what it does not know: a
literal value for a password, token or secret setting in YAML or JSON (Kubernetes env entries, compose
environment maps), Mosquitto password hashes, key and certificate files, filled-in credential files. The files
real credentials go in are git-ignored.

A finding that is not a credential is allowed by its value in NOT_SECRETS, with the reason; a line that only
names a Kubernetes Secret is not a finding. The vendored CRD schemas (tests/support/validate/schemas, generated from
upstream artifacts) get every check but detect-secrets' line scan, which takes longer on them than on the rest
of the repository together."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SELF = str(Path(__file__).resolve().relative_to(REPO))

# Values detect-secrets flags that are not credentials, each with why.
NOT_SECRETS = {
    "CHANGE_ME": "the documented placeholder (deploy/kubernetes/base/credentials.placeholder.env)",
    "TSDEMO_INFLUX_PASSWORD": "the name of an environment variable",
    "influxdb_password": "the name of a DC/OS secret",
    "grafana_password": "the name of a DC/OS secret",
    "a1b2c3d4e5": "a Grafana dashboard uid in recorded API fixtures",
    "wrong": "a test's deliberately wrong password",
    "short": "a test's deliberately too short password",
    "pw": "a unit test's stand-in against no server",
    "s3cret": "a unit test's stand-in against no server",
}
# Lines that name a Secret rather than hold one (Kubernetes references by name).
REFERENCE_LINES = [r"^\s*(-\s+)?secretName:\s*[\w.-]+\s*$", r"secretKeyRef"]
VENDORED = "tests/support/validate/schemas/"
# A setting whose value must never be a literal: PASSWORD, TOKEN or SECRET at the end of its name.
SECRET_SETTING = re.compile(r"(?i)(password|passwd|token|secret)$")
# What detect-secrets does not look for.
MOSQUITTO_HASH = re.compile(r"\$[67]\$\d+\$[A-Za-z0-9+/]{8,}")
SECRET_FILES = re.compile(r"(^|/)(credentials\.env|passwd|[^/]*\.(pem|key|p12|pfx|jks|keystore))$")
IGNORED = ["deploy/compose/credentials.env", "deploy/compose/mosquitto/tls/tls.key",
           "deploy/kubernetes/overlays/aks/credentials.env"]


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p and (REPO / p).is_file()]


def literal_secret_settings(node: object) -> list[str]:
    """Names of password/token/secret settings given a literal value anywhere in a parsed YAML/JSON tree:
    ``{name: X_PASSWORD, value: ...}`` entries and ``X_PASSWORD: ...`` keys. References (``${VAR}``,
    ``valueFrom``) and the documented placeholder are fine."""
    def literal(value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, str | int):
            return False  # a flag ("secureJsonFields": {"password": true}), or a structure walked below
        return str(value).strip() not in ("", *NOT_SECRETS) and not str(value).startswith("${")

    found = []
    if isinstance(node, dict):
        name = node.get("name")
        if isinstance(name, str) and SECRET_SETTING.search(name) and literal(node.get("value")):
            found.append(name)
        for key, value in node.items():
            if isinstance(key, str) and SECRET_SETTING.search(key) and literal(value):
                found.append(key)
            found += literal_secret_settings(value)
    elif isinstance(node, list):
        for item in node:
            found += literal_secret_settings(item)
    return found


def findings(root: Path, paths: list[str]) -> list[str]:
    """``path:line: what`` for every credential-like thing in ``paths`` (relative to ``root``)."""
    import json

    import yaml
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    found = []
    with default_settings():
        collection = SecretsCollection(root=str(root))
        collection.scan_files(*[p for p in paths if not p.startswith(VENDORED)], num_processors=2)
    for path, secrets in collection.data.items():
        lines = (root / path).read_text(errors="replace").splitlines()
        for secret in secrets:
            line = lines[secret.line_number - 1] if secret.line_number <= len(lines) else ""
            # YAML block scalars are reported at their first line: the value itself may be the reference.
            reference = any(re.search(p, text) for p in REFERENCE_LINES for text in (line, secret.secret_value or ""))
            if secret.secret_value not in NOT_SECRETS and not reference:
                found.append(f"{path}:{secret.line_number}: {secret.type}")
    for path in paths:
        if SECRET_FILES.search(path):
            found.append(f"{path}: a key, certificate, password or credentials file")
        text = (root / path).read_text(errors="replace")
        for n, line in enumerate(text.splitlines(), 1):
            if MOSQUITTO_HASH.search(line):
                found.append(f"{path}:{n}: a Mosquitto password hash")
        if path.endswith((".yaml", ".yml", ".json")):
            try:
                docs = list(yaml.safe_load_all(text)) if not path.endswith(".json") else [json.loads(text)]
            except (yaml.YAMLError, ValueError, RecursionError):
                continue  # not ours to parse (a corpus of bad input); the line scans above still ran
            found += [f"{path}: {name} has a literal value" for d in docs for name in literal_secret_settings(d)]
    return sorted(found)


def test_no_tracked_file_holds_a_credential():
    # This file's own examples are made-up credentials the scan must find (below), and NOT_SECRETS names them.
    problems = findings(REPO, [p for p in tracked_files() if p != SELF])
    assert problems == [], ("credentials in tracked files (if one is not a credential, add its value to "
                            "NOT_SECRETS with the reason):\n" + "\n".join(problems))


@pytest.mark.parametrize("name, text", [
    ("grafana.env", "GRAFANA_ADMIN_PASSWORD=admin\n"),
    ("settings.py", 'mqtt_password = "k7Qp2vXz9LmN4rTb"\n'),
    ("deploy.yaml", "env:\n  - {name: TSDEMO_KAFKA_SASL_PASSWORD, value: 'Zr8uQ1mW3nB6yT0p'}\n"),
    ("ca.txt", "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n"),
    ("passwd.txt", "tsdemo-bridge:$7$101$TA8KvPpcLtvYVBDz$nELr/xFyHfskLqq5qoyaJeLjJi02==\n"),
    ("tls.key", "anything\n"),
    ("credentials.env", "mqtt-bridge-password=\n"),
    ("compose.yaml", "services:\n  a:\n    environment:\n      GF_SECURITY_ADMIN_PASSWORD: admin\n"),
], ids=["env-file", "python", "kubernetes-env", "private-key", "mosquitto-hash", "key-file", "credentials-file",
        "compose-env"])
def test_the_scan_finds_credentials(tmp_path: Path, name: str, text: str):
    (tmp_path / name).write_text(text)
    assert findings(tmp_path, [name]), name


def test_a_reference_to_a_kubernetes_secret_is_no_finding(tmp_path: Path):
    (tmp_path / "pod.yaml").write_text("volumes:\n  - name: c\n    secret:\n      secretName: tsdemo-credentials\n"
                                       "env:\n  - valueFrom: {secretKeyRef: {name: tsdemo-bridge, key: password}}\n")
    assert findings(tmp_path, ["pod.yaml"]) == []


def test_the_files_real_credentials_go_in_are_git_ignored():
    done = subprocess.run(["git", "check-ignore", "--no-index", *IGNORED], cwd=REPO, capture_output=True, text=True)
    assert done.stdout.split() == IGNORED, done.stderr
