"""MQTT connection settings and client construction shared by the generator and the bridge.

Only imported by services that install paho-mqtt (the generator and ingest extras).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from pydantic import Field, model_validator

from servicekit.settings import ServiceSettings, secrets_from_files


class MqttSettings(ServiceSettings):
    mqtt_host: str = Field("127.0.0.1", description="MQTT broker host")
    mqtt_port: int = Field(1883, ge=1, le=65535, description="MQTT broker port")
    mqtt_username: str | None = Field(None, description="MQTT username (password auth)")
    mqtt_password: str | None = Field(None, description="MQTT password")
    mqtt_password_file: Path | None = Field(None, description="file holding the MQTT password")
    mqtt_tls: bool = Field(False, description="connect with TLS")
    mqtt_ca_file: Path | None = Field(None, description="CA bundle for MQTT TLS")
    mqtt_cert_file: Path | None = Field(None, description="client certificate (PEM) for MQTT TLS client auth")
    mqtt_key_file: Path | None = Field(None, description="private key (PEM) of the MQTT client certificate")
    mqtt_keepalive_s: int = Field(30, ge=5, description="MQTT keepalive in seconds")

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        return secrets_from_files(data, (("mqtt_password", "mqtt_password_file", "MQTT password"),))

    def password(self) -> str | None:
        return self.mqtt_password


def make_client(settings: MqttSettings, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    """A paho MQTT 5 client with auth, TLS and reconnect backoff configured from settings."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5,
        manual_ack=manual_ack,
    )
    if settings.mqtt_username:
        client.username_pw_set(settings.mqtt_username, settings.password())
    if settings.mqtt_tls:
        client.tls_set(
            ca_certs=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None,
            certfile=str(settings.mqtt_cert_file) if settings.mqtt_cert_file else None,
            keyfile=str(settings.mqtt_key_file) if settings.mqtt_key_file else None,
        )
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client
