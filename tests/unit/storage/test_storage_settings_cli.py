"""Storage settings (auth, URL and retention validation) and the ``tsdemo storage`` commands' own logic."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from storage.cli import add_parser, parse_time_ms
from storage.settings import InfluxSettings, parse_duration_s


def test_settings_auth_and_validation(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    settings = InfluxSettings(influx_token_file=token_file)
    assert settings.auth_headers() == {"Authorization": "Token s3cret"}
    assert "s3cret" not in repr(settings)
    basic = InfluxSettings(influx_username="u", influx_password="p").auth_headers()
    assert basic == {"Authorization": "Basic dTpw"}
    assert InfluxSettings().auth_headers() == {}
    assert InfluxSettings(influx_url="http://h:8086/").influx_url == "http://h:8086"
    for url in ("localhost:8086", "ftp://h", "http://h:99999", "http://h/?db=x", "http://u:p@h"):
        with pytest.raises(ValueError, match="influx_url"):
            InfluxSettings(influx_url=url)
    with pytest.raises(ValueError, match="minimum of 1h"):
        InfluxSettings(raw_retention="30m")
    with pytest.raises(ValueError, match="duration"):
        InfluxSettings(raw_retention="7 days")
    assert InfluxSettings(rollup_1h_retention="inf").rollup_1h_retention == "INF"
    assert parse_duration_s("168h0m0s") == parse_duration_s("7d") == 7 * 86400


def test_password_file_and_its_errors(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    settings = InfluxSettings(influx_username="u", influx_password_file=secret)
    assert settings.influx_password is not None and settings.influx_password.get_secret_value() == "hunter2"
    with pytest.raises(ValueError, match="cannot read the password file"):
        InfluxSettings(influx_username="u", influx_password_file=tmp_path / "missing")
    with pytest.raises(ValueError, match="not both"):
        InfluxSettings(influx_username="u", influx_token="t")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tsdemo")
    add_parser(parser.add_subparsers(dest="command"))
    return parser


def test_init_exits_non_zero_with_a_clear_message_when_influxdb_is_unreachable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = _parser().parse_args(["storage", "init", "--influx-url", "http://127.0.0.1:9", "--wait-s", "1.5"])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    assert "waiting for InfluxDB at http://127.0.0.1:9" in err
    assert "did not answer /ping within 1.5s" in err


def test_bad_settings_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    args = _parser().parse_args(["storage", "init", "--influx-url", "localhost:8086"])
    with pytest.raises(SystemExit) as info:
        args.func(args)
    assert info.value.code == 2
    assert "--influx-url / TSDEMO_INFLUX_URL" in capsys.readouterr().err


def test_storage_needs_a_subcommand() -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["storage"])


def test_backfill_time_forms() -> None:
    now = 1_700_000_000_000
    assert parse_time_ms("1699999000000", now) == 1_699_999_000_000
    assert parse_time_ms("6h", now) == now - 6 * 3_600_000
    assert parse_time_ms("1h30m", now) == now - 5_400_000
    assert parse_time_ms("2023-11-14T22:13:20Z", now) == 1_700_000_000_000
    assert parse_time_ms("2023-11-14T22:13:20", now) == 1_700_000_000_000
    assert parse_time_ms("2023-11-15T00:13:20+02:00", now) == 1_700_000_000_000
    for bad in ("yesterday", "6 hours", "5x"):
        with pytest.raises(ValueError, match="not epoch ms"):
            parse_time_ms(bad, now)
