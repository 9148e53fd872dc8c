"""A client that cannot reach its broker says so, naming where it looked, while paho retries."""

from __future__ import annotations

import logging

import pytest

from deploy.servers import free_port
from deploy.wait import wait_until
from servicekit.mqtt import MqttSettings, connect_in_session, make_client


def test_an_unreachable_broker_is_logged_with_its_address(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # bound and closed again: nothing listens there
    settings = MqttSettings(mqtt_host="127.0.0.1", mqtt_port=port)
    client = make_client(settings, "unreachable")
    with caplog.at_level(logging.WARNING, logger="servicekit.mqtt"):
        connect_in_session(client, settings, session_expiry_s=60)
        try:
            wait_until(lambda: caplog.records, 10, "a warning about the unreachable broker", every=0.05)
        finally:
            client.loop_stop()
    assert [r.getMessage() for r in caplog.records][:1] == [
        f"cannot reach the MQTT broker at 127.0.0.1:{port} (TSDEMO_MQTT_HOST, TSDEMO_MQTT_PORT); retrying every 1-30 s"]
