"""The tests' own layout: pytest imports test modules by their basename (the default import mode, no
``__init__.py`` in the test folders), so two test files of the same name in different folders stop the
whole collection with "import file mismatch" once both are selected."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_has_a_basename_of_its_own():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert not [name for name, n in names.items() if n > 1]
