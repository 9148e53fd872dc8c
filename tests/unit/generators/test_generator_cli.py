"""``tsdemo generate``: every option explained with its environment variable; bad values refused."""

from __future__ import annotations

import pytest

from deploy.cli import build_parser
from generators.settings import GeneratorSettings
from servicekit.settings import settings_from_args


def test_help_explains_every_option_with_its_environment_variable(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["generate", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    for name, field in GeneratorSettings.model_fields.items():
        flag, env = "--" + name.replace("_", "-"), "TSDEMO_" + name.upper()
        assert field.description, f"{name} has no description"
        assert flag in text and f"[env: {env}]" in text, name
        assert " ".join(field.description.split())[:40] in text, name
    for fault in ("--anomaly-rate", "--duplicate-rate", "--out-of-order-rate", "--late-rate", "--clock-skew-rate",
                  "--offline-rate", "--reboot-rate", "--malformed-rate", "--replay-path", "--labels-path",
                  "--mqtt-cert-file"):
        assert fault in text


def parse(argv):
    return settings_from_args(GeneratorSettings, build_parser().parse_args(["generate", *argv]))


@pytest.mark.parametrize("argv, named", [
    (["--anomaly-rate", "1.5"], "--anomaly-rate / TSDEMO_ANOMALY_RATE"),
    (["--qos", "2"], "--qos / TSDEMO_QOS"),
    (["--replay-timing", "fast"], "--replay-timing / TSDEMO_REPLAY_TIMING"),
    (["--ledger-detail-s", "10"], "--ledger-detail-s / TSDEMO_LEDGER_DETAIL_S"),
])
def test_bad_values_stop_with_the_flag_and_variable_named(argv, named, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    assert named in capsys.readouterr().err


def test_inconsistent_settings_are_refused(tmp_path, capsys):
    for argv, says in ((["--late-rate", "0.7", "--out-of-order-rate", "0.5"], "cannot exceed 1"),
                       (["--replay-path", str(tmp_path / "nope.csv")], "does not exist"),
                       (["--devices", "2", "--batch", "3"], "cannot exceed the number of devices")):
        with pytest.raises(SystemExit):
            parse(argv)
        assert says in capsys.readouterr().err


def test_faults_are_off_by_default_and_settable_from_the_environment(monkeypatch):
    default = parse([])
    rates = [n for n in GeneratorSettings.model_fields if n.endswith("_rate") and n != "rate"]
    assert len(rates) == 8 and all(getattr(default, n) == 0 for n in rates)
    monkeypatch.setenv("TSDEMO_DUPLICATE_RATE", "0.25")
    assert parse([]).duplicate_rate == 0.25
    assert parse(["--duplicate-rate", "0.5"]).duplicate_rate == 0.5
