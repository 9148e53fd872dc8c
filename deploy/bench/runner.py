"""Runs the chosen sub-benches in one environment (servers started once), then writes ``results.json``,
``results.png`` and prints the tables. What one sub-bench measured is kept when a later one fails."""

from __future__ import annotations

import importlib
import time
import traceback
from typing import Any

from deploy.bench.environment import BenchEnvironment
from deploy.bench.report import BenchResult, format_report, machine, results_document, write_results
from deploy.bench.settings import BenchSettings

#: In the order ``all`` runs them: e2e last, so its ramp can be set from the stages' own rates.
BENCHES = ("generate", "ingest", "process", "e2e")


def run_benches(common: BenchSettings, plan: dict[str, BenchSettings]) -> int:
    """Run ``plan`` (name -> its settings); 0 when every sub-bench ran, 1 when one failed."""
    out_dir = common.output_dir()
    started, host = time.time(), machine()
    results: list[BenchResult] = []
    status = 0
    with BenchEnvironment(out_dir, common.keep_state, common.ready_timeout_s) as env:
        env.say(f"output in {env.out_dir}; machine load average {host['load_avg'][0]:.1f} on {host['cpus']} CPUs")
        for name in BENCHES:
            if name not in plan:
                continue
            module: Any = importlib.import_module(f"deploy.bench.{name}")
            env.say(f"--- {name}")
            try:
                result = module.run(env, plan[name], list(results))
            except Exception as exc:  # noqa: BLE001 - report it and keep what the others measured
                status = 1
                env.say(f"{name} failed: {exc}")
                result = BenchResult(name, plan[name].model_dump(mode="json"),
                                     extra={"error": "".join(traceback.format_exception_only(exc)).strip()})
            results.append(result)
            write_results(results_document(results, started, host), env.out_dir)
        document = results_document(results, started, host)
        path = write_results(document, env.out_dir)
        try:
            from deploy.bench.chart import draw

            draw(document, env.out_dir / "results.png")
        except Exception as exc:  # noqa: BLE001 - a chart failure must not hide the numbers
            env.say(f"could not draw the chart: {exc}")
        print(format_report(document))
        env.say(f"results: {path}, chart: {env.out_dir / 'results.png'}, profiles: {env.profiles}")
    return status
