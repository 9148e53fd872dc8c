"""The ``tsdemo`` command: each service alone (as its container runs it), the local stack, verify."""

from __future__ import annotations

import argparse
import sys

from servicekit.settings import ENV_PREFIX

# (module, function, commands it adds, the extra that provides them). Each container image installs
# one extra, so a command whose packages are missing is listed with the extra to install instead of
# breaking every other command.
COMMANDS = [
    ("deploy.local.commands", "add_parsers", ("up", "down", "status"), "local"),
    ("generators.cli", "add_parser", ("generate",), "generator"),
    ("ingest.cli", "add_parser", ("ingest",), "ingest"),
    ("processing.cli", "add_parser", ("process",), "processing"),
    ("processing.cli", "add_score_parser", ("anomalies",), "processing"),
    ("storage.cli", "add_parser", ("storage",), "storage"),
    ("dashboards.cli", "add_parser", ("dashboards",), "dashboards"),
    ("deploy.verify", "add_parser", ("verify",), "storage"),
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


def _present(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is not there
        return False


def build_parser() -> argparse.ArgumentParser:
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
    for module, function, names, extra in COMMANDS:
        # A service image holds only its own packages (deploy/images/Dockerfile): a command whose module
        # is not there at all is listed as unavailable; one that is there but fails to import is a bug.
        if not _present(module):
            for name in names:
                _unavailable(sub, name, extra, module)
            continue
        try:
            register = getattr(importlib.import_module(module), function)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] in {m.split(".")[0] for m, *_ in COMMANDS}:
                raise  # our own module missing is a bug, not an image without an extra
            for name in names:
                _unavailable(sub, name, extra, exc.name or "?")
            continue
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import signal

    # `tsdemo status --json | head` should end quietly, like any Unix tool.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
