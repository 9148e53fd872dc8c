"""The ``tsdemo`` command: each service alone (as its container runs it), the local stack, verify."""

from __future__ import annotations

import argparse
import sys

from servicekit.settings import ENV_PREFIX

# (module, function, commands it adds, the extra that provides them). Each container image installs
# one extra, so a command whose packages are missing is listed with the extra to install instead of
# breaking every other command.
COMMANDS = [
    ("deploy.stack.commands", "add_parser", ("up", "down", "status"), "local"),
    ("generators.cli", "add_parser", ("generate",), "generator"),
    ("ingest.cli", "add_parser", ("ingest",), "ingest"),
    ("processing.cli", "add_parser", ("process",), "processing"),
    ("storage.cli", "add_parser", ("storage",), "storage"),
    ("dashboards.cli", "add_parser", ("dashboards",), "dashboards"),
    ("deploy.checks.verify", "add_parser", ("verify",), "storage"),
    ("deploy.checks.anomalies", "add_parser", ("anomalies",), "local"),
    ("deploy.bench.cli", "add_parser", ("bench",), "bench"),
]


def _unavailable(sub: argparse._SubParsersAction, name: str, extra: str, missing: str) -> None:
    message = f"`tsdemo {name}` needs the {extra} extra (missing module {missing!r}): pip install 'tsdemo[{extra}]'"
    parser = sub.add_parser(name, help=f"(not installed: needs tsdemo[{extra}])", description=message)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

    def fail(_args: argparse.Namespace) -> int:
        print("tsdemo: " + message, file=sys.stderr)
        return 2

    parser.set_defaults(func=fail)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given ``argv``, only the module of the command it names is imported (the
    others are listed by name), so `tsdemo generate` in the generator's image never imports the bench,
    the stack or the checks, nor needs them to be there."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="tsdemo",
        description=(
            "Time-series IoT demo: a simulated sensor fleet -> MQTT -> Kafka -> Spark -> InfluxDB -> Grafana.\n"
            f"Every option can also be set by the {ENV_PREFIX}* environment variable named in its help."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = next((a for a in argv or () if not a.startswith("-")), None)
    known = {name for *_, names, _ in COMMANDS for name in names}
    for module, function, names, extra in COMMANDS:
        if wanted in known and wanted not in names:
            for name in names:  # not the command run: its name only (its module stays unimported)
                sub.add_parser(name, add_help=False)
            continue
        try:
            register = getattr(importlib.import_module(module), function)
        except ModuleNotFoundError as exc:
            ours = {m.split(".")[0] for m, *_ in COMMANDS}
            if exc.name and exc.name.split(".")[0] in ours and not module.startswith(exc.name):
                raise  # a module of ours missing under one that is there is a bug
            for name in names:  # a third-party package, or a whole room this image does not ship
                _unavailable(sub, name, extra, exc.name or "?")
            continue
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import signal

    # `tsdemo status --json | head` should end quietly, like any Unix tool.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
