"""``tsdemo bench``'s wiring: the subcommands, their flags and variables, and what ``all`` runs."""

from __future__ import annotations

import pytest

from deploy.bench.cli import plan_all
from deploy.bench.settings import AllBenchSettings, GenerateBenchSettings, IngestBenchSettings
from deploy.cli import build_parser


def test_every_sub_bench_is_a_command_with_flags_and_variables(capsys):
    parser = build_parser()
    for name in ("generate", "ingest", "process", "e2e", "all"):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(["bench", name, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert "--out-dir" in out and "TSDEMO_OUT_DIR" in out and "--profile" in out
    args = parser.parse_args(["bench", "ingest", "--bridge-counts", "1", "--bridge-counts", "3"])
    assert args.bridge_counts == ["1", "3"]


def test_flags_are_validated_at_start_naming_the_variable(capsys):
    args = build_parser().parse_args(["bench", "process", "--trigger", "soon"])
    with pytest.raises(SystemExit) as exit_:
        args.func(args)
    assert exit_.value.code == 2
    assert "TSDEMO_TRIGGER" in capsys.readouterr().err
    with pytest.raises(ValueError):
        GenerateBenchSettings(qos_levels=[2])


def test_all_runs_every_sub_bench_with_the_shared_settings_and_scaled_sizes(tmp_path, monkeypatch):
    monkeypatch.delenv("TSDEMO_READINGS", raising=False)
    plan = plan_all(AllBenchSettings(scale=0.5, out_dir=tmp_path, devices=8, profile="never"))
    assert list(plan) == ["generate", "ingest", "process", "e2e"]
    assert all(p.out_dir == tmp_path and p.devices == 8 and p.profile == "never" for p in plan.values())
    assert plan["generate"].readings == GenerateBenchSettings.model_fields["readings"].default // 2
    assert plan["ingest"].readings == IngestBenchSettings.model_fields["readings"].default // 2
    assert plan["e2e"].duration_s == pytest.approx(7.5)


def test_the_default_output_is_a_fresh_directory_under_tsdemo_bench():
    path = GenerateBenchSettings().output_dir()
    assert path.parent.as_posix() == ".tsdemo/bench" and path.name.endswith("Z")


def test_an_ingest_preload_must_fit_the_brokers_queue():
    with pytest.raises(ValueError, match="more messages than the broker queues"):
        IngestBenchSettings(readings=2_000_000, batch=10)
    assert IngestBenchSettings(readings=1_000_000, batch=10).readings == 1_000_000


def test_a_short_baseline_is_repeated_to_last_a_second():
    from deploy.bench.generate import MAX_REPEAT, baseline_repeats

    assert baseline_repeats(2.0) == 1
    assert baseline_repeats(0.25) == 4
    assert baseline_repeats(0.0) == MAX_REPEAT
