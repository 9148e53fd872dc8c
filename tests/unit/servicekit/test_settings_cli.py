"""Flags and TSDEMO_* variables: precedence, help text, clear errors."""

import pytest

from deploy.cli import build_parser
from generators.settings import GeneratorSettings
from servicekit.settings import settings_from_args


def parse(argv):
    return build_parser().parse_args(argv)


def test_flag_beats_environment_beats_default(monkeypatch):
    monkeypatch.setenv("TSDEMO_DEVICES", "7")
    assert settings_from_args(GeneratorSettings, parse(["generate"])).devices == 7
    assert settings_from_args(GeneratorSettings, parse(["generate", "--devices", "9"])).devices == 9
    monkeypatch.delenv("TSDEMO_DEVICES")
    assert settings_from_args(GeneratorSettings, parse(["generate"])).devices == 20


def test_bad_value_exits_with_a_message_naming_flag_and_variable(capsys):
    with pytest.raises(SystemExit) as exc:
        settings_from_args(GeneratorSettings, parse(["generate", "--rate", "-3"]))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--rate / TSDEMO_RATE" in err


@pytest.mark.parametrize("command", [["up"], ["down"], ["status"], ["generate"], ["ingest"], ["process"],
                                     ["storage", "init"], ["verify"]])
def test_every_subcommand_help_names_its_environment_variables(command, capsys):
    with pytest.raises(SystemExit) as exc:
        parse(command + ["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "[env: TSDEMO_" in out
