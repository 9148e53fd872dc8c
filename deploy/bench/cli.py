"""``tsdemo bench generate|ingest|process|e2e|all``. ``deploy/cli.py`` calls ``add_parser(subparsers)``."""

from __future__ import annotations

import argparse
import functools

from deploy.bench.settings import (
    AllBenchSettings,
    BenchSettings,
    E2EBenchSettings,
    GenerateBenchSettings,
    IngestBenchSettings,
    ProcessBenchSettings,
)
from servicekit.settings import add_service_command

SUB_BENCHES: dict[str, tuple[type[BenchSettings], str]] = {
    "generate": (GenerateBenchSettings, "the generator's readings/s at QoS 0 and 1 beside mosquitto_pub"),
    "ingest": (IngestBenchSettings, "the bridge's readings/s with 1, 2 and 4 processes beside mosquitto_sub | kcat"),
    "process": (ProcessBenchSettings, "the Spark job's readings/s beside Spark reading into a no-op sink"),
    "e2e": (E2EBenchSettings, "the highest rate the whole pipeline sustains: batches under the trigger, "
            "fresh data, nothing lost"),
}
#: The settings ``all`` scales; each sub-bench's own default times --scale.
SCALED = ("readings", "duration_s")


def _run(name: str, settings: BenchSettings) -> int:
    from deploy.bench.runner import run_benches

    return run_benches(settings, {name: settings})


def plan_all(settings: AllBenchSettings) -> dict[str, BenchSettings]:
    """Every sub-bench with the shared settings of ``all`` and its default sizes times ``--scale``."""
    common = settings.model_dump(include=set(BenchSettings.model_fields))
    plan: dict[str, BenchSettings] = {}
    for name, (model, _) in SUB_BENCHES.items():
        sizes = {}
        for field in SCALED:
            if field in model.model_fields:
                default = model.model_fields[field].default
                sizes[field] = type(default)(default * settings.scale)
        plan[name] = model(**common, **sizes)
    return plan


def _run_all(settings: AllBenchSettings) -> int:
    from deploy.bench.runner import run_benches

    return run_benches(settings, plan_all(settings))


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers ``tsdemo bench {generate,ingest,process,e2e,all}``."""
    bench = subparsers.add_parser(
        "bench",
        help="measure each stage and the whole pipeline against baselines of the same run",
        description=(
            "Start Mosquitto, Kafka and InfluxDB on free ports in a temporary directory, measure, stop them.\n"
            "Each figure stands beside a baseline measured in the same run on the same messages; the\n"
            "tables are printed and written with a chart and profiles to --out-dir."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = bench.add_subparsers(dest="bench_command", metavar="COMMAND", required=True)
    for name, (model, help_text) in SUB_BENCHES.items():
        add_service_command(commands, name, help_text, model, functools.partial(_run, name))
    add_service_command(
        commands, "all", "every sub-bench in one run (about 10 minutes with the default sizes)", AllBenchSettings,
        _run_all, description="generate, ingest, process, then the end-to-end ramp, whose steps are set from the "
        "stages' own rates;\n--scale multiplies every default size.",
    )
    return bench
