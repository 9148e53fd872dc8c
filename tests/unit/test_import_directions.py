"""Data flows one way: every import in the service packages (lazy ones inside functions included), read
from the source, goes only where the brief allows. Every service may use servicekit; processing and
dashboards may also use storage; generators and ingest use nothing else (the bridge is a pipe);
servicekit uses no service; deploy (not checked here) uses anything."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"servicekit", "generators", "ingest", "processing", "storage", "dashboards", "deploy"}
ALLOWED: dict[str, set[str]] = {
    "servicekit": set(),
    "generators": {"servicekit"},
    "ingest": {"servicekit"},
    "storage": {"servicekit"},
    "processing": {"servicekit", "storage"},
    "dashboards": {"servicekit", "storage"},
}


def imported_packages(path: Path) -> dict[str, int]:
    """Our top-level packages the module imports, each with the first line that does."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue  # a relative import stays inside its own package
        for name in names:
            top = name.split(".")[0]
            if top in OURS:
                found.setdefault(top, node.lineno)
    return found


def violations(package: str) -> list[str]:
    allowed = ALLOWED[package] | {package}
    return [f"{path.relative_to(ROOT)}:{line} imports {top}"
            for path in sorted((ROOT / package).rglob("*.py"))
            for top, line in imported_packages(path).items() if top not in allowed]


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_go_only_where_allowed(package):
    assert violations(package) == []


def test_the_check_sees_an_upstream_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom servicekit import settings\n\n"
                      "def f():\n    from generators.fleet import Fleet\n")
    assert imported_packages(module) == {"servicekit": 2, "generators": 5}
