"""Comparisons, results.json and the printed tables, from given numbers (no servers)."""

from __future__ import annotations

import json

import pytest

from deploy.bench.report import (
    BenchResult,
    Comparison,
    Run,
    format_report,
    machine,
    results_document,
    summary_table,
    write_results,
)
from deploy.bench.resources import Usage


def _comparison(subject_rate: float, baseline_rate: float, target: float = 0.5) -> Comparison:
    subject = Run("tsdemo ingest x1", readings=int(subject_rate * 10), messages=int(subject_rate), seconds=10.0,
                  processes={"bridge-0": Usage(cpu_s=9.0, wall_s=10.0, peak_rss_mb=61.5)})
    baseline = Run("mosquitto_sub | kcat -P", readings=int(baseline_rate * 2), messages=int(baseline_rate / 5),
                   seconds=2.0, processes={"kcat": Usage(0.4, 2.0, 40.0)})
    return Comparison("ingest", "1 bridge, QoS 1", subject, baseline, target)


def test_ratio_and_target_come_from_the_readings_rates():
    c = _comparison(subject_rate=1000, baseline_rate=4000)
    assert c.subject.rate == pytest.approx(1000) and c.baseline.rate == pytest.approx(4000)
    assert c.ratio == pytest.approx(0.25) and c.met is False
    assert _comparison(3000, 4000).met is True
    assert Comparison("e2e", "x", c.subject, None, 0.5).met is None


def test_a_rate_measured_another_way_overrides_readings_over_seconds():
    run = Run("tsdemo process", readings=40_000, messages=4000, seconds=20.0, readings_per_s=2500.0)
    assert run.rate == 2500.0 and run.messages_per_s == pytest.approx(250.0)
    assert Usage(cpu_s=3.0, wall_s=2.0, peak_rss_mb=1).cpu_pct == pytest.approx(150.0)


def test_results_json_has_the_expected_keys_and_round_trips(tmp_path):
    result = BenchResult("ingest", {"readings": 1000}, [_comparison(1000, 4000)])
    document = results_document([result], started=1_700_000_000.0, host_before=machine())
    path = write_results(document, tmp_path)
    loaded = json.loads(path.read_text())
    c = loaded["benches"]["ingest"]["comparisons"][0]
    assert set(c) >= {"bench", "case", "subject", "baseline", "ratio", "target", "met", "profile", "notes"}
    assert c["subject"]["readings_per_s"] == pytest.approx(1000) and c["ratio"] == pytest.approx(0.25)
    assert c["subject"]["processes"]["bridge-0"] == {"cpu_s": 9.0, "cpu_pct": 90.0, "peak_rss_mb": 61.5,
                                                     "wall_s": 10.0}
    assert loaded["machine"]["cpus"] >= 1 and "load_avg_at_end" in loaded["machine"]


def test_the_tables_escape_pipes_and_show_every_process():
    document = results_document([BenchResult("ingest", {}, [_comparison(1000, 4000)])], 1_700_000_000.0,
                                machine())
    table = summary_table(document)
    assert "mosquitto_sub \\| kcat -P" in table and "**no**" in table and "0.25" in table
    # every row has as many cells as the header
    lines = table.splitlines()
    assert len({line.replace("\\|", "").count("|") for line in lines}) == 1
    report = format_report(document)
    assert "bridge-0" in report and "kcat" in report and "90" in report


def test_a_sub_bench_that_failed_is_named_with_its_error():
    failed = BenchResult("process", {}, extra={"error": "RuntimeError: tsdemo process exited with status 1"})
    document = results_document([BenchResult("ingest", {}, [_comparison(1000, 4000)]), failed], 1_700_000_000.0,
                                machine())
    assert "- process: RuntimeError: tsdemo process exited with status 1" in format_report(document)
