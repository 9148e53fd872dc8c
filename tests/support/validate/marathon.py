"""Validates deploy/dcos against Marathon's app, pod and group definitions (schemas/marathon/*.json).

No package registry ships Marathon's own AppDefinition schema (Maven Central, PyPI's dcos/dcoscli/marathon
packages and npm were searched), so schemas/marathon/ was written for tsdemo from Marathon 1.10's REST API
documentation (its RAML types); each file's x-source says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMAS = Path(__file__).resolve().parent / "schemas" / "marathon"
DCOS_DIR = Path(__file__).resolve().parents[3] / "deploy" / "dcos"


def validator(kind: str):  # -> jsonschema.Validator
    import jsonschema
    from referencing import Registry, Resource

    schemas = {p.name: json.loads(p.read_text()) for p in SCHEMAS.glob("*.json")}
    registry = Registry().with_resources((name, Resource.from_contents(s)) for name, s in schemas.items())
    return jsonschema.Draft202012Validator(schemas[f"{kind}.json"], registry=registry)


def problems(doc: dict[str, Any], kind: str) -> list[str]:
    """``kind``: app, pod or group."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator(kind).iter_errors(doc)]
