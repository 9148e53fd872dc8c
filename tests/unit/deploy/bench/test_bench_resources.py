"""Resource accounting of child processes and the environment children get (no servers)."""

from __future__ import annotations

import sys

from deploy.bench.arrivals import PROBE_TOPIC, arrival_window
from deploy.bench.resources import ResourceMonitor
from deploy.services.process import child_env, spawn


def test_a_child_is_measured_to_its_end_with_positive_cpu_and_memory(tmp_path):
    code = "import time\nx = bytearray(30 * 2**20)\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    with ResourceMonitor(interval_s=0.05) as monitor:
        child = spawn("spin", [sys.executable, "-c", code], tmp_path / "spin.log")
        monitor.watch(child.name, child.pid)
        assert child.wait_exit(60, monitor) == 0
        usage = monitor.stop()["spin"]
    # Logic, not speed: it used at least the CPU it spun for, and at least the memory it held.
    assert usage.cpu_s >= 0.3 and usage.wall_s > 0 and usage.cpu_pct > 0
    assert usage.peak_rss_mb >= 30
    assert "process_time" in (tmp_path / "spin.log").read_text()  # the command line heads its log


def test_processes_under_one_name_add_up(tmp_path):
    with ResourceMonitor(interval_s=0.05) as monitor:
        for i in range(2):
            child = spawn("tool", [sys.executable, "-c", "sum(range(3 * 10**6))"], tmp_path / f"{i}.log")
            monitor.watch(child.name, child.pid)
            child.wait_exit(60, monitor)
        usage = monitor.stop()
    assert set(usage) == {"tool"} and usage["tool"].cpu_s > 0


def test_children_do_not_inherit_the_shells_tsdemo_settings(monkeypatch):
    monkeypatch.setenv("TSDEMO_KAFKA_BOOTSTRAP", "elsewhere:9092")
    monkeypatch.setenv("TSDEMO_CACHE_DIR", "/cache")
    env = child_env({"TSDEMO_MQTT_PORT": "1234"})
    assert "TSDEMO_KAFKA_BOOTSTRAP" not in env
    assert env["TSDEMO_CACHE_DIR"] == "/cache" and env["TSDEMO_MQTT_PORT"] == "1234" and "PATH" in env


def test_arrival_window_ignores_the_probe_and_spans_first_to_last():
    lines = [f"100.0 {PROBE_TOPIC}", "101.5 sensors/a/gw-a", "101.0 sensors/b/gw-b", "103.5 sensors/a/gw-a", ""]
    window = arrival_window(lines)
    assert window is not None and window.messages == 3 and window.seconds == 2.5
    assert arrival_window([f"1.0 {PROBE_TOPIC}"]) is None
