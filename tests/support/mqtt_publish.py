"""A plain QoS 1 publisher for tests that need exact control over what goes on the wire."""

from __future__ import annotations

import json
import time
from typing import Any

import paho.mqtt.client as mqtt


def publish_all(host: str, port: int, messages: list[tuple[str, Any]], client_id: str = "test-pub") -> None:
    """Publishes each (topic, payload) at QoS 1 and returns once the broker acknowledged all of them.

    A payload that is not bytes or str is sent as JSON.
    """
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.connect(host, port)
    client.loop_start()
    try:
        infos = []
        for topic, payload in messages:
            body = payload if isinstance(payload, bytes | str) else json.dumps(payload)
            infos.append(client.publish(topic, body, qos=1))
            while len([i for i in infos if not i.is_published()]) > 500:
                time.sleep(0.01)
        for info in infos:
            info.wait_for_publish(timeout=30)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def reading(device: str, seq: int, ts: int, value: float, *, site: str = "lab", boot: int = 0,
            metric: str = "temperature") -> dict[str, Any]:
    return {"device_id": device, "site": site, "type": "environment", "ts": ts, "seq": seq, "boot": boot,
            "metrics": {metric: value}}
