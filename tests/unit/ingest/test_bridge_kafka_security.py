"""The bridge's Kafka security settings (SCRAM over TLS, as the Kubernetes manifests wire them from Strimzi's
KafkaUser Secret and cluster CA) reach both producers: kafka-python's and librdkafka's."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from ingest.settings import BridgeSettings

PASSWORD = secrets.token_urlsafe(12)  # none committed


def scram_over_tls(tmp_path: Path) -> BridgeSettings:
    (tmp_path / "password").write_text(PASSWORD + "\n")
    return BridgeSettings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                          kafka_sasl_username="tsdemo-bridge", kafka_sasl_password_file=tmp_path / "password",
                          kafka_ssl_ca_file=tmp_path / "ca.crt")


def test_kafka_python_gets_the_mechanism_the_password_from_its_file_and_the_ca(tmp_path: Path):
    assert scram_over_tls(tmp_path).kafka_security() == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "tsdemo-bridge",
        "sasl_plain_password": PASSWORD, "ssl_cafile": str(tmp_path / "ca.crt")}


def test_librdkafka_gets_the_same(tmp_path: Path):
    librdkafka = pytest.importorskip("ingest.librdkafka")  # the ingest extra installs confluent-kafka
    conf = librdkafka.config(scram_over_tls(tmp_path))
    assert {k: conf[k] for k in ("security.protocol", "sasl.mechanism", "sasl.username", "sasl.password",
                                 "ssl.ca.location")} == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "tsdemo-bridge",
        "sasl.password": PASSWORD, "ssl.ca.location": str(tmp_path / "ca.crt")}
