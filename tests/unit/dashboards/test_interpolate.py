"""Grafana's InfluxQL substitution as ``dashboards.interpolate`` reproduces it."""

from __future__ import annotations

import pytest

from dashboards import interpolate as g

HOUR = 3_600_000


@pytest.mark.parametrize(
    ("raw_ms", "rounded_ms"),
    [(3, 1), (12, 10), (3_000, 2_000), (3_600, 5_000), (9_000, 10_000), (14_000, 15_000), (40_000, 30_000),
     (50_000, 60_000), (100_000, 120_000), (400_000, 300_000), (4_000_000, 3_600_000), (10 * HOUR, 43_200_000),
     (30 * 24 * HOUR, 2_592_000_000), (10**12, 31_536_000_000)],
)
def test_round_interval_follows_grafanas_ladder(raw_ms, rounded_ms):
    assert g.round_interval_ms(raw_ms) == rounded_ms


def test_interval_is_range_over_points_rounded_and_never_below_the_minimum():
    assert g.calculate_interval_ms(0, HOUR, 1000) == 5_000  # 3.6 s rounds to 5 s
    assert g.calculate_interval_ms(0, HOUR, 1000, "10s") == 10_000  # the datasource's minimum wins
    assert g.calculate_interval_ms(0, 24 * HOUR, 1000, "10s") == 60_000  # 86.4 s rounds to 1 m
    assert g.calculate_interval_ms(0, 6 * HOUR, 100, "10s") == 300_000


@pytest.mark.parametrize(("ms", "text"), [(10_000, "10s"), (60_000, "1m"), (90_000, "1m"), (500, "500ms"),
                                          (3_600_000, "1h"), (86_400_000, "1d"), (0, "1ms")])
def test_intervals_are_written_in_their_largest_whole_unit_as_grafanas_backend_does(ms, text):
    assert g.format_interval(ms) == text


def test_macros_are_replaced_in_grafanas_order():
    query = ('SELECT sum("n") * 1000 / $__interval_ms FROM m WHERE $timeFilter '
             "GROUP BY time($__interval), time($interval)")
    assert g.substitute_macros(query, 1_000, 2_000, 10_000) == (
        'SELECT sum("n") * 1000 / 10000 FROM m WHERE time >= 1000ms and time <= 2000ms '
        "GROUP BY time(10s), time(10s)"
    )


def _dashboard() -> dict:
    return {"templating": {"list": [
        {"name": "site", "multi": True, "includeAll": True, "allValue": ".*"},
        {"name": "host", "multi": True, "includeAll": True},
        {"name": "device", "multi": False, "includeAll": False},
    ]}}


def test_variables_are_written_as_influxql_regexes():
    selection = g.selections(_dashboard(), {"site": ["a", "b.c"], "host": g.ALL, "device": "dev/1"},
                             {"host": ["h1", "h2"]})
    query = 'WHERE "site" =~ /^($site)$/ AND "host" =~ /^(${host})$/ AND "device_id" =~ /^([[device]])$/'
    assert g.substitute_variables(query, selection) == (
        r'WHERE "site" =~ /^((a|b\.c))$/ AND "host" =~ /^((h1|h2))$/ AND "device_id" =~ /^(dev\/1)$/'
    )


def test_all_with_a_custom_value_is_inserted_as_it_is():
    selection = g.selections(_dashboard(), {"site": g.ALL}, {"site": ["a", "b"]})
    assert g.substitute_variables("/^($site)$/", selection) == "/^(.*)$/"


def test_one_value_of_a_multi_variable_is_not_grouped_and_numbers_are_not_escaped():
    selection = g.selections(_dashboard(), {"site": ["s-1"], "device": "12.5"})
    assert g.substitute_variables("$site $device", selection) == "s-1 12.5"


def test_unknown_variables_and_macros_are_left_for_the_backend():
    assert g.substitute_variables("$timeFilter $__interval $nope", {}) == "$timeFilter $__interval $nope"


def test_interpolate_does_both_steps():
    selection = g.selections(_dashboard(), {"device": "d1"})
    assert g.interpolate('"device_id" =~ /^($device)$/ AND $timeFilter', from_ms=1, to_ms=2, interval_ms=10_000,
                         variables=selection) == '"device_id" =~ /^(d1)$/ AND time >= 1ms and time <= 2ms'


def test_bad_minimum_interval_is_refused():
    with pytest.raises(ValueError, match="not an interval"):
        g.parse_interval_ms("ten seconds")
