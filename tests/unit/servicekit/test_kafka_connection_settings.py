"""The shared Kafka connection settings, as the bridge's client and the Spark job's Kafka options see them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ingest.settings import BridgeSettings
from processing.settings import ProcessingSettings


def test_the_job_signs_in_to_kafka_with_scram_over_tls_from_the_same_variables_as_the_bridge(tmp_path, monkeypatch):
    secret = tmp_path / "password"
    secret.write_text('p"w\\rd\n')
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    env = {"TSDEMO_KAFKA_BOOTSTRAP": "kafka:9093", "TSDEMO_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
           "TSDEMO_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "TSDEMO_KAFKA_SASL_USERNAME": "tsdemo-processing",
           "TSDEMO_KAFKA_SASL_PASSWORD_FILE": str(secret), "TSDEMO_KAFKA_SSL_CA_FILE": str(ca)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    options = ProcessingSettings().spark_kafka_options()
    jaas = options.pop("kafka.sasl.jaas.config")
    assert options == {
        "kafka.bootstrap.servers": "kafka:9093",
        "kafka.security.protocol": "SASL_SSL",
        "kafka.ssl.truststore.type": "PEM",
        "kafka.ssl.truststore.location": str(ca),
        "kafka.sasl.mechanism": "SCRAM-SHA-512",
    }
    login, _, made_up = jaas.partition(" password=")
    assert login == 'org.apache.kafka.common.security.scram.ScramLoginModule required username="tsdemo-processing"'
    assert made_up == '"p\\"w\\\\rd";'  # the file's quote and backslash escaped for JAAS
    bridge = BridgeSettings().kafka_security()
    assert bridge == {"security_protocol": "SASL_SSL", "ssl_cafile": str(ca), "sasl_mechanism": "SCRAM-SHA-512",
                      "sasl_plain_username": "tsdemo-processing", "sasl_plain_password": 'p"w\\rd'}


def test_plaintext_by_default_and_an_unknown_mechanism_is_refused_at_start(monkeypatch):
    assert ProcessingSettings().spark_kafka_options() == {"kafka.bootstrap.servers": "127.0.0.1:9092",
                                                          "kafka.security.protocol": "PLAINTEXT"}
    monkeypatch.setenv("TSDEMO_KAFKA_SASL_MECHANISM", "GSSAPI")
    with pytest.raises(ValidationError, match="kafka_sasl_mechanism"):
        ProcessingSettings()
