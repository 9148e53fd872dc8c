"""Writes this machine's pip settings for the image builds: ``python build_settings.py DIR``.

A machine behind a TLS-inspecting proxy or with a private package index has pip settings the build
containers lack: a CA bundle (``PIP_CERT``, ``global.cert``), an index URL, trusted hosts. This copies
them, as pip itself reports them (``pip config list``, which includes the ``PIP_*`` variables), into
``DIR/pip.conf``; a file a setting names (cert, client-cert) is copied into DIR and the setting points at
its path inside the build (``/etc/tsdemo-build``, see the Dockerfile's ``build`` stage). With a CA bundle,
this machine's Java trust store is copied too, as ``DIR/cacerts``: Ivy, fetching Spark's Kafka connector in
the processing build, goes through the same proxy. Nothing host-specific is named here; only what the
machine says.

Settings that name a folder of this machine (find-links) cannot apply inside a build and are left out,
with a note on stderr.
"""

from __future__ import annotations

import ast
import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

IN_BUILD = Path("/etc/tsdemo-build")
# pip settings holding the path of a file the build needs a copy of.
FILE_SETTINGS = {"cert", "client-cert"}
# pip settings holding a path of this machine that means nothing inside a build.
LOCAL_SETTINGS = {"config-file", "find-links", "cache-dir", "log", "src", "target", "prefix", "root", "build-dir"}
_LINE = re.compile(r"^(?P<section>[^.]*)\.(?P<key>[\w-]+)=(?P<value>.*)$")


def pip_settings() -> dict[str, str]:
    """``pip config list`` as {key: value}; environment variables win over files, as in pip itself."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in out.splitlines():
        match = _LINE.match(line.strip())
        if not match:
            continue
        section, key = match["section"], match["key"]
        value = ast.literal_eval(match["value"])
        if section == ":env:":
            env[key] = value
        elif section in ("global", "install", "download"):
            files.setdefault(key, value)
    return files | env


def java_truststore() -> Path | None:
    """The trust store of the ``java`` on PATH (a symlink on Debian: resolved)."""
    java = shutil.which("java")
    if not java:
        return None
    store = Path(java).resolve().parents[1] / "lib" / "security" / "cacerts"
    return store.resolve() if store.exists() else None


def write(target: Path) -> list[str]:
    target.mkdir(parents=True, exist_ok=True)
    conf = configparser.ConfigParser()
    conf["global"] = {}
    notes = []
    for key, value in sorted(pip_settings().items()):
        if key in LOCAL_SETTINGS:
            notes.append(f"left out pip's {key} (a path of this machine)")
            continue
        if key in FILE_SETTINGS:
            source = Path(value)
            if not source.is_file():
                notes.append(f"left out pip's {key}: {value} is not a file")
                continue
            name = f"{key}.pem"
            shutil.copyfile(source, target / name)
            value = str(IN_BUILD / name)
        conf["global"][key] = value
    with open(target / "pip.conf", "w") as fh:
        conf.write(fh)
    if "cert" in conf["global"] and (store := java_truststore()):
        shutil.copyfile(store, target / "cacerts")
        notes.append("Java's trust store copied for Ivy")
    keys = ", ".join(conf["global"]) or "none"
    return [f"build settings in {target}: pip {keys}", *notes]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0].startswith("-"):
        print(__doc__, file=sys.stderr)
        return 2
    for line in write(Path(args[0])):
        print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
