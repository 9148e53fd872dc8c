"""The e2e ramp's decisions from given numbers: its steps, freshness, the verdict per step."""

from __future__ import annotations

import pytest

from deploy.bench.e2e import DEFAULT_RATES, freshness_values, judge, ramp, stage_rates
from deploy.bench.report import BenchResult, Comparison, Run
from deploy.bench.settings import E2EBenchSettings


def _result(name: str, rate: float, **details) -> BenchResult:
    subject = Run(name, 0, 0, 0.0, details=details, readings_per_s=rate)
    return BenchResult(name, {}, [Comparison(name, "case", subject, None, 0.5)])


def test_stage_rates_pick_the_configuration_the_ramp_uses():
    s = E2EBenchSettings(batch=10, bridges=2)
    results = [
        _result("generate", 9000, qos=1, batch=10), _result("generate", 99, qos=0, batch=10),
        _result("generate", 98, qos=1, batch=1), _result("ingest", 12000, bridges=2),
        _result("ingest", 97, bridges=1), _result("process", 2000),
    ]
    assert stage_rates(results, s) == {"generate": 9000, "ingest (2 bridges)": 12000, "process": 2000}


def test_ramp_from_rates_then_the_slowest_stage_then_defaults():
    assert ramp(E2EBenchSettings(rates=[3000, 1000]), {"process": 2000}) == [1000, 3000]
    s = E2EBenchSettings(ramp_fractions=[1.0, 0.5, 0.25])
    assert ramp(s, {"generate": 9000, "process": 2000}) == [500, 1000, 2000]
    assert ramp(E2EBenchSettings(), {}) == list(DEFAULT_RATES)


def test_freshness_counts_only_samples_showing_the_step():
    samples = [(10_000, None), (11_000, 5_000), (12_000, 10_500), (13_000, 12_000)]
    assert freshness_values(samples, since_ms=10_000) == pytest.approx([1.5, 1.0])


def _step(**kw) -> dict:
    return {"offered_rate": 1000, "achieved_rate": 1000, "batch_p95_ms": 1500, "freshness_p99_s": 3.0,
            "lost": 0, "double_counted": 0, **kw}


def test_a_step_passes_only_when_every_criterion_holds():
    assert judge(_step(), trigger_ms=2000, freshness_target_s=5) == []
    reasons = judge(_step(batch_p95_ms=2500, freshness_p99_s=7.5, lost=3, achieved_rate=500), 2000, 5)
    assert len(reasons) == 4
    assert any("p95 batch" in r for r in reasons) and any("verify: 3 lost" in r for r in reasons)
    assert judge(_step(batch_p95_ms=None, freshness_p99_s=None), 2000, 5) == [
        "no micro-batch finished", "none of the step's data was stored while it ran"]
