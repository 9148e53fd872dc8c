"""Settings plumbing: pydantic-settings models read ``TSDEMO_*`` variables, and the same models
become command-line flags, so ``--help`` always shows each option with the variable behind it.

Every ``tsdemo`` command is registered one way: ``add_service_command`` with a settings model holding
all its options (``add_command_group`` makes a group such as ``tsdemo storage``); a command that prints
results takes ``--json`` (``TSDEMO_JSON``) from ``PrintsResults``.

pydantic-settings has its own CLI source, but its help does not name the environment variable
behind each flag and it parses nested models in ways our users do not need; this keeps the flags
flat and the precedence simple: flag > environment > default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, ClassVar, TypeVar, get_args, get_origin

from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "TSDEMO_"


class ServiceSettings(BaseSettings):
    """Base for every service's settings: frozen, ``TSDEMO_`` prefix, unknown keys rejected."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="ignore")

    # (secret field, field naming its file, what it is in messages): each class lists its own, and a
    # model gets those of every class it is made of (a bridge's MQTT and Kafka secrets both).
    secret_files: ClassVar[tuple[tuple[str, str, str], ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        return secrets_from_files(data, tuple(
            pair for klass in cls.__mro__ for pair in vars(klass).get("secret_files", ())
        ))


S = TypeVar("S", bound=BaseSettings)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _extra(field: Any) -> dict[str, Any]:
    return field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}


def public_name(name: str, field: Any) -> str:
    """The name a field's flag and ``TSDEMO_*`` variable use: its own, or the ``flag`` it declares."""
    return str(_extra(field).get("flag", name))


class PrintsResults(ServiceSettings):
    """A command that prints results: ``--json`` (``TSDEMO_JSON``) prints them as one JSON document."""

    json_output: bool = Field(
        False, description="print the result as JSON",
        # The field cannot be called ``json`` (BaseModel has a method of that name): the flag and the
        # variable are named here; ``--json-output``, the old spelling, is still read but not shown.
        validation_alias=AliasChoices("json_output", ENV_PREFIX.lower() + "json"),
        json_schema_extra={"flag": "json", "deprecated_flags": ["json_output"]},
    )


def _is_bool(annotation: Any) -> bool:
    return annotation is bool or (get_origin(annotation) is not None and bool in get_args(annotation))


def add_settings_arguments(parser: argparse.ArgumentParser, model: type[BaseSettings]) -> None:
    """One flag per settings field; the help names its ``TSDEMO_*`` variable and default."""
    group = parser.add_argument_group(f"{model.__name__} (flags override environment variables)")
    for name, field in model.model_fields.items():
        env = ENV_PREFIX + public_name(name, field).upper()
        flags = [_flag(public_name(name, field))]
        default = field.default if field.default_factory is None else field.default_factory()
        shown = " (required)" if field.is_required() else "" if default is None else f" (default: {default})"
        help_text = f"{field.description or name}{shown} [env: {env}]"
        if get_origin(field.annotation) is list:
            group.add_argument(
                *flags, dest=name, default=None, action="append", metavar=name.upper(),
                help=help_text + " (repeatable)",
            )
        elif _is_bool(field.annotation):
            group.add_argument(*flags, dest=name, default=None, action=argparse.BooleanOptionalAction, help=help_text)
            for old in _extra(field).get("deprecated_flags", ()):
                group.add_argument(_flag(old), dest=name, action="store_const", const=True, help=argparse.SUPPRESS)
        else:
            group.add_argument(*flags, dest=name, default=None, metavar=name.upper(), help=help_text)


def settings_from_args(model: type[S], args: argparse.Namespace) -> S:
    """Build settings from flags given on the command line over the environment.

    Exits with status 2 and a message naming each bad flag and variable when validation fails.
    """
    given = {name: getattr(args, name) for name in model.model_fields if getattr(args, name, None) is not None}
    try:
        return model(**given)
    except ValidationError as exc:
        lines = [f"tsdemo: invalid settings for {model.__name__}:"]
        for err in exc.errors():
            loc = str(err["loc"][0]) if err["loc"] else "?"
            field = public_name(loc, model.model_fields[loc]) if loc in model.model_fields else loc
            lines.append(
                f"  {_flag(field)} / {ENV_PREFIX}{field.upper()}: {err['msg']} (got {err.get('input')!r})"
            )
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None


def read_secret(path: Path, what: str) -> str:
    """A secret from a file (a mounted container secret), stripped; a clear error when unreadable or empty."""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} file {str(path)!r}: {exc.strerror or exc}") from None
    if not secret:
        raise ValueError(f"the {what} file {str(path)!r} is empty")
    return secret


def secrets_from_files(data: Any, pairs: tuple[tuple[str, str, str], ...]) -> Any:
    """For a ``mode="before"`` model validator: fills each (secret, file field, what) from its file.

    Reading before field validation keeps the model frozen and validates the secret like one given
    directly; an explicit value wins over its file.
    """
    if not isinstance(data, dict):
        return data
    data = dict(data)
    for secret, file_key, what in pairs:
        path = data.get(file_key)
        if path and not data.get(secret):
            data[secret] = read_secret(Path(path), what)
    return data


def add_service_command(
    subparsers: argparse._SubParsersAction,
    name: str,
    help_text: str,
    model: type[S],
    run: Any,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Registers ``tsdemo <name>`` whose flags are ``model``'s fields; ``run(settings)`` does the work."""
    parser = subparsers.add_parser(
        name,
        help=help_text,
        description=description or help_text,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_settings_arguments(parser, model)
    parser.set_defaults(func=lambda args: run(settings_from_args(model, args)))
    return parser


def add_command_group(
    subparsers: argparse._SubParsersAction, name: str, help_text: str, description: str | None = None
) -> argparse._SubParsersAction:
    """Registers ``tsdemo <name> COMMAND``; its commands are added with ``add_service_command``."""
    parser = subparsers.add_parser(
        name, help=help_text, description=description or help_text, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
