"""Reads deploy/compose the way docker compose does, for tests that run its services without Docker.

Only what the compose file here uses: .env, ``${VAR}``/``${VAR:-default}``/``${VAR-default}``/``${VAR:?err}``
interpolation with ``$$`` escapes, YAML merge keys, and each service's effective command and environment
(its image's ENTRYPOINT, CMD and ENV from the Dockerfile, overridden by the compose file).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

COMPOSE_DIR = Path(__file__).resolve().parents[1] / "compose"
REPO = COMPOSE_DIR.parents[1]

_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]+)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$", re.S)


class ComposeError(ValueError):
    """The compose file asks for something this reader (or compose itself) would refuse."""


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; comments and blank lines skipped, surrounding quotes removed."""
    values: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ComposeError(f"{path}:{lineno}: not KEY=VALUE: {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("plain"):
            return env.get(match.group("plain"), "")
        parsed = _BRACED.match(match.group("braced"))
        if not parsed or "${" in match.group("braced"):  # nested defaults: compose has them, we need none
            raise ComposeError(f"bad interpolation {match.group(0)!r}")
        name, op, arg = parsed.group("name", "op", "arg")
        value = env.get(name)
        unset_or_empty = not value
        if op in (":-", "-"):
            missing = unset_or_empty if op == ":-" else value is None
            return interpolate(arg, env) if missing else value
        if op in (":?", "?"):
            if unset_or_empty if op == ":?" else value is None:
                raise ComposeError(f"required variable {name} is missing: {arg}")
            return value
        if op in (":+", "+"):
            present = not unset_or_empty if op == ":+" else value is not None
            return interpolate(arg, env) if present else ""
        return value or ""

    return _VAR.sub(sub, text)


def _interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(n, env) for n in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env) for k, v in node.items()}
    return node


def load(overrides: dict[str, str] | None = None, compose_dir: Path = COMPOSE_DIR) -> dict[str, Any]:
    """The compose file with .env (and ``overrides``, as a shell's variables would) interpolated."""
    import yaml

    env = {**read_dotenv(compose_dir / ".env"), **(overrides or {})}
    raw = yaml.safe_load((compose_dir / "compose.yaml").read_text())
    return _interpolate_tree(raw, env)


@dataclass
class ImageConfig:
    """What a Dockerfile's final stage gives a container: environment, entrypoint and command."""

    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _env_pairs(text: str, known: dict[str, str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for token in shlex.split(text):
        key, sep, value = token.partition("=")
        if not sep:
            raise ComposeError(f"ENV in the legacy 'KEY value' form is not supported: {text!r}")
        pairs[key] = interpolate(value, {**known, **pairs})
    return pairs


def image_config(dockerfile: Path) -> ImageConfig:
    """The final stage's ENV, ENTRYPOINT and CMD (exec form only: shell form hides the real argv)."""
    cfg = ImageConfig()
    global_args: dict[str, str] = {}
    for word, rest in dockerfile_instructions(dockerfile):
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            global_args.setdefault(key.strip(), value.strip())
        elif word == "FROM":
            cfg = ImageConfig(args=dict(global_args))  # a new stage starts empty
        elif word == "ENV":
            cfg.env.update(_env_pairs(rest, cfg.env))
        elif word in ("ENTRYPOINT", "CMD"):
            try:
                argv = json.loads(rest)
            except json.JSONDecodeError as exc:
                raise ComposeError(f"{dockerfile}: {word} must use the exec (JSON) form: {rest!r}") from exc
            if word == "ENTRYPOINT":
                cfg.entrypoint, cfg.cmd = argv, []  # a new ENTRYPOINT resets CMD, as in Docker
            else:
                cfg.cmd = argv
    return cfg


@dataclass
class ServiceRun:
    """How a compose service's container starts: argv, environment and mounts (container path -> source)."""

    name: str
    argv: list[str]
    env: dict[str, str]
    mounts: dict[str, str]
    image: str


def dockerfile_for_image(config: dict[str, Any], image: str) -> Path | None:
    """The Dockerfile that builds ``image`` (found through whichever service has the build section)."""
    for svc in config["services"].values():
        build = svc.get("build")
        if svc.get("image") == image and build:
            context = (COMPOSE_DIR / build.get("context", ".")).resolve()
            return context / build.get("dockerfile", "Dockerfile")
    return None


def _environment(node: Any) -> dict[str, str]:
    if node is None:
        return {}
    if isinstance(node, list):  # ["KEY=value", ...]
        return dict(item.split("=", 1) for item in node)
    return {k: "" if v is None else str(v) for k, v in node.items()}


def service_run(config: dict[str, Any], name: str) -> ServiceRun:
    svc = config["services"][name]
    dockerfile = dockerfile_for_image(config, svc["image"])
    if dockerfile is None:
        raise ComposeError(f"service {name}: no service builds its image {svc['image']}")
    image = image_config(dockerfile)
    entrypoint = svc.get("entrypoint", image.entrypoint)
    command = svc.get("command", image.cmd if "entrypoint" not in svc else [])
    if isinstance(entrypoint, str) or isinstance(command, str):
        raise ComposeError(f"service {name}: use list forms for entrypoint and command")
    mounts = {}
    for vol in svc.get("volumes", []):
        if isinstance(vol, str):
            source, target = vol.split(":")[:2]
        else:
            source, target = vol.get("source", ""), vol["target"]
        mounts[target] = source
    return ServiceRun(name, [*entrypoint, *command], {**image.env, **_environment(svc.get("environment"))},
                      mounts, svc["image"])
