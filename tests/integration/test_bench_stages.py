"""``tsdemo bench generate`` and ``ingest`` on tiny sizes against the real servers the bench starts itself:
the outputs are well formed and the figures positive. Their speed is not judged here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.bench]


def bench(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deploy.cli", "bench", *args], capture_output=True, text=True,
                          timeout=timeout)


def check_figures(c: dict, processes: set[str], baseline_processes: set[str]) -> None:
    subject, baseline = c["subject"], c["baseline"]
    assert subject["readings"] > 0 and subject["seconds"] > 0 and subject["readings_per_s"] > 0
    assert baseline["readings_per_s"] > 0
    assert c["ratio"] == pytest.approx(subject["readings_per_s"] / baseline["readings_per_s"], rel=1e-2)
    assert c["met"] == (c["ratio"] >= c["target"])
    assert set(subject["processes"]) >= processes and set(baseline["processes"]) >= baseline_processes
    for usage in [*subject["processes"].values(), *baseline["processes"].values()]:
        assert usage["cpu_s"] >= 0 and usage["peak_rss_mb"] > 0 and usage["wall_s"] > 0


def test_generate_writes_results_a_chart_and_a_profile(tmp_path: Path):
    done = bench("generate", "--readings", "2000", "--batches", "10", "--qos-levels", "1", "--profile", "always",
                 "--out-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    (c,) = results["benches"]["generate"]["comparisons"]
    assert c["case"] == "QoS 1, batch 10, 2 processes" and c["baseline"]["tool"] == "mosquitto_pub"
    check_figures(c, {"tsdemo generate", "mosquitto"}, {"mosquitto_pub", "mosquitto"})
    assert c["subject"]["messages"] == 200 and c["subject"]["readings"] == 2000
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(c["profile"]).read_text().startswith("tsdemo generate, QoS 1, batch 10:")
    assert "mosquitto_pub" in done.stdout and "| generate" in done.stdout


def test_ingest_compares_the_bridge_with_mosquitto_sub_and_kcat(tmp_path: Path):
    done = bench("ingest", "--readings", "3000", "--bridge-counts", "1", "--profile", "never",
                 "--out-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    (c,) = results["benches"]["ingest"]["comparisons"]
    assert c["baseline"]["tool"] == "mosquitto_sub | kcat -P" and c["profile"] is None
    check_figures(c, {"bridge-0", "mosquitto", "kafka"}, {"mosquitto_sub", "kcat", "kafka"})
    assert c["subject"]["messages"] == c["baseline"]["messages"] == 300
