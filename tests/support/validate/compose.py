"""Reads deploy/compose the way docker compose does, for tests that run its services without Docker.

Only what the compose file here uses: .env, ``${VAR}``/``${VAR:-default}``/``${VAR-default}``/``${VAR:?err}``
interpolation with ``$$`` escapes, YAML merge keys, and each service's effective command and environment
(its image's ENTRYPOINT, CMD and ENV from the Dockerfile's build target and the stages that target is built
FROM, overridden by the compose file).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
COMPOSE_DIR = REPO / "deploy" / "compose"

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
    """What a build target gives a container, through the whole chain of stages it is built FROM:
    environment, entrypoint, command, user and healthcheck (the last HEALTHCHECK's arguments)."""

    env: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    healthcheck: str | None = None


@dataclass
class Stage:
    """One ``FROM`` of a Dockerfile and the instructions after it."""

    name: str  # its ``AS`` name (lower case, as Docker matches them), else its index
    base: str  # what it is FROM, as written: an image reference (``${ARG}`` too) or an earlier stage's name
    steps: list[tuple[str, str]]
    parent: Stage | None = None  # the stage it is FROM, when it is FROM one of this Dockerfile's stages

    def chain(self) -> list[Stage]:
        """This stage and the stages it inherits from, the first ancestor first."""
        return [*(self.parent.chain() if self.parent else []), self]

    def copies_from(self) -> list[str]:
        """The stages (or images) its ``COPY --from=...`` instructions name."""
        return [m.group(1).lower() for word, rest in self.steps if word == "COPY"
                for m in [re.search(r"--from=(\S+)", rest)] if m]


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


def dockerfile_args(path: Path) -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults (what FROM lines may use)."""
    args: dict[str, str] = {}
    for word, rest in dockerfile_instructions(path):
        if word == "FROM":
            break
        if word == "ARG" and "=" in rest:
            key, _, value = rest.partition("=")
            args.setdefault(key.strip(), value.strip())
    return args


def dockerfile_stages(path: Path) -> dict[str, Stage]:
    """The stages by name, in order; a stage FROM an earlier one is linked to it as its ``parent``."""
    global_args = dockerfile_args(path)
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for word, rest in dockerfile_instructions(path):
        if word == "FROM":
            words = [w for w in rest.split() if not w.startswith("--")]  # --platform=...
            if len(words) not in (1, 3) or len(words) == 3 and words[1].upper() != "AS":
                raise ComposeError(f"{path}: cannot read FROM {rest!r}")
            name = words[2].lower() if len(words) == 3 else str(len(stages))
            if name in stages:
                raise ComposeError(f"{path}: two stages are named {name!r}")
            # A stage name after the ARGs are expanded; an image reference otherwise.
            current = Stage(name, words[0], [], stages.get(interpolate(words[0], global_args).lower()))
            stages[name] = current
        elif current is not None:
            current.steps.append((word, rest))
    if not stages:
        raise ComposeError(f"{path}: no FROM")
    return stages


def build_stage(dockerfile: Path, target: str | None = None) -> Stage:
    """The stage ``docker build --target`` builds (the last stage without a target)."""
    stages = dockerfile_stages(dockerfile)
    if target is None:
        return list(stages.values())[-1]
    if target.lower() not in stages:
        raise ComposeError(f"{dockerfile}: no stage named {target!r} (it has {', '.join(stages)})")
    return stages[target.lower()]


def _env_pairs(text: str, known: dict[str, str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for token in shlex.split(text):
        key, sep, value = token.partition("=")
        if not sep:
            raise ComposeError(f"ENV in the legacy 'KEY value' form is not supported: {text!r}")
        pairs[key] = interpolate(value, {**known, **pairs})
    return pairs


def image_config(dockerfile: Path, target: str | None = None) -> ImageConfig:
    """The target stage's ENV, ENTRYPOINT, CMD, USER and HEALTHCHECK, with what it inherits from the stages
    it is built FROM (exec form only for ENTRYPOINT and CMD: shell form hides the real argv). What an
    outside base image sets is not known here: a chain that starts FROM an image starts empty."""
    cfg = ImageConfig(args=dockerfile_args(dockerfile))
    for stage in build_stage(dockerfile, target).chain():
        for word, rest in stage.steps:
            if word == "ENV":
                cfg.env.update(_env_pairs(rest, cfg.env))
            elif word == "USER":
                cfg.user = rest
            elif word == "HEALTHCHECK":
                cfg.healthcheck = rest
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


@dataclass
class ImageBuild:
    """How compose builds an image: its Dockerfile and the ``target`` stage (None: the last stage)."""

    dockerfile: Path
    target: str | None

    def config(self) -> ImageConfig:
        return image_config(self.dockerfile, self.target)


def image_build(config: dict[str, Any], image: str, compose_dir: Path = COMPOSE_DIR) -> ImageBuild | None:
    """The build of ``image`` (found through whichever service has the build section)."""
    for svc in config["services"].values():
        build = svc.get("build")
        if svc.get("image") == image and build:
            context = (compose_dir / build.get("context", ".")).resolve()
            return ImageBuild(context / build.get("dockerfile", "Dockerfile"), build.get("target"))
    return None


def _environment(node: Any) -> dict[str, str]:
    if node is None:
        return {}
    if isinstance(node, list):  # ["KEY=value", ...]
        return dict(item.split("=", 1) for item in node)
    return {k: "" if v is None else str(v) for k, v in node.items()}


def service_run(config: dict[str, Any], name: str, compose_dir: Path = COMPOSE_DIR) -> ServiceRun:
    svc = config["services"][name]
    build = image_build(config, svc["image"], compose_dir)
    if build is None:
        raise ComposeError(f"service {name}: no service builds its image {svc['image']}")
    image = build.config()
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
