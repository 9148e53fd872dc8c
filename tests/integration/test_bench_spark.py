"""``tsdemo bench process`` and ``e2e`` on tiny sizes: Spark runs, batches are read back, the outputs are
well formed. Minutes each (Spark starts slowly on 2 cores); speed is not judged."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.bench]


def bench(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploy.cli", "bench", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_process_reads_the_jobs_batches_beside_the_no_op_sink(tmp_path: Path):
    done = bench("process", "--readings", "4000", "--max-offsets-per-trigger", "100", "--warmup-batches", "1",
                 "--profile", "always", "--out-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    (c,) = json.loads((tmp_path / "results.json").read_text())["benches"]["process"]["comparisons"]
    assert c["baseline"]["tool"] == "spark -> noop sink" and c["subject"]["tool"] == "tsdemo process"
    assert c["subject"]["readings_per_s"] > 0 and c["baseline"]["readings_per_s"] > 0 and c["ratio"] > 0
    queries = c["subject"]["details"]["queries"]
    assert set(queries) == {"windows", "anomalies", "dlq"}
    for q in queries.values():
        assert q["batches"] >= 1 and q["rows"] > 0 and q["batch_p95_ms"] > 0
        assert q["sustained_bound"] in (">=", "<=") and q["phases_ms"]  # from Spark's event log
    assert c["baseline"]["details"]["phases_ms"]["addBatch"] >= 0
    assert c["subject"]["processes"]["tsdemo process"]["peak_rss_mb"] > 0
    assert any(p.endswith("-jvm.summary.txt") for p in c["profile"].split(", "))


def test_e2e_runs_a_ramp_and_verifies_it(tmp_path: Path):
    done = bench("e2e", "--rates", "300", "--duration-s", "5", "--bridges", "1", "--profile", "never",
                 "--out-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    e2e = json.loads((tmp_path / "results.json").read_text())["benches"]["e2e"]
    (step,) = e2e["steps"]
    assert step["offered_rate"] == 300 and step["achieved_rate"] > 0
    assert {"batch_p95_ms", "freshness_p50_s", "freshness_p99_s", "lost", "double_counted", "passed",
            "failed"} <= set(step)
    assert set(step["processes"]) >= {"tsdemo generate", "bridge-0", "tsdemo process", "kafka"}
    # whatever the verdict on a busy machine, nothing may be lost or counted twice
    assert e2e["final_verify"]["lost"] == 0 and e2e["final_verify"]["double_counted"] == 0
    assert [c["case"] for c in e2e["comparisons"]][-1] == "stretch goal"
