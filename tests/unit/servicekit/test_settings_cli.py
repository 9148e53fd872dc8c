"""Flags and TSDEMO_* variables: precedence, help text, clear errors; one style for every command."""

import argparse
import secrets
import subprocess
import sys

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


def leaf_commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every runnable command of the parser tree, as (its words, its parser)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from leaf_commands(child, (*path, name))


def test_every_command_is_installed_here_and_every_option_names_its_variable():
    leaves = dict(leaf_commands(build_parser()))
    assert {"up", "down", "status", "generate", "ingest", "process", "verify"} <= {p[0] for p in leaves}
    assert ("storage", "stages") in leaves and ("anomalies", "evaluate") in leaves
    for path, parser in leaves.items():
        assert "not installed" not in (parser.description or ""), path
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
                continue
            assert "[env: TSDEMO_" in (action.help or ""), (path, action.option_strings)


def test_a_command_that_prints_results_takes_json():
    leaves = dict(leaf_commands(build_parser()))
    for path in (("status",), ("verify",), ("anomalies", "score"), ("anomalies", "evaluate")):
        flags = {f for a in leaves[path]._actions for f in a.option_strings}
        assert "--json" in flags, path


def test_status_and_down_take_only_what_they_use():
    leaves = dict(leaf_commands(build_parser()))
    for path in (("status",), ("down",)):
        flags = {f for a in leaves[path]._actions for f in a.option_strings}
        assert not flags & {"--rate", "--detach", "--devices", "--grafana"}, (path, flags)


@pytest.mark.parametrize("command", ["generate", "ingest", "process", "storage", "dashboards"])
def test_a_services_command_imports_neither_the_stack_the_checks_nor_the_bench(command):
    code = (f"import sys; from deploy.cli import build_parser; build_parser([{command!r}, '--help'])\n"
            "print(sorted(m for m in sys.modules if m.startswith(('deploy.stack', 'deploy.checks', "
            "'deploy.bench', 'deploy.servers'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_model_made_of_several_settings_reads_each_ones_secret_files(tmp_path, monkeypatch):
    # The bridge's settings are MQTT's and Kafka's together: both secret files must be read, and a
    # value given directly must win over its file.
    from ingest.settings import BridgeSettings

    (tmp_path / "mqtt").write_text("from-mqtt-file\n")
    (tmp_path / "kafka").write_text("from-kafka-file\n")
    monkeypatch.setenv("TSDEMO_MQTT_PASSWORD_FILE", str(tmp_path / "mqtt"))
    monkeypatch.setenv("TSDEMO_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "kafka"))
    settings = BridgeSettings()
    assert (settings.mqtt_password, settings.kafka_sasl_password) == ("from-mqtt-file", "from-kafka-file")
    given = secrets.token_hex(8)
    monkeypatch.setenv("TSDEMO_MQTT_PASSWORD", given)
    assert BridgeSettings().mqtt_password == given
