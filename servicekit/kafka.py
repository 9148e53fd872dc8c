"""Kafka connection settings shared by the bridge and the Spark job: where Kafka is and how to sign in.

One settings model (the bridge's and the job's ``TSDEMO_KAFKA_*`` variables mean the same thing) and
its translations: kafka-python's keyword arguments for the bridge (``kafka_security``; librdkafka's
keys are made from them in ``ingest.librdkafka``) and the ``kafka.*`` options of Spark's Kafka source
and sink for the job (``spark_kafka_options``). Only plain settings here: no Kafka library is imported.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from servicekit.settings import ServiceSettings

#: Spark's Kafka client signs in through JAAS; the login module each SASL mechanism needs.
_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}


class KafkaConnectionSettings(ServiceSettings):
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated")
    kafka_security_protocol: str = Field("PLAINTEXT", description="Kafka security protocol (PLAINTEXT, SSL, "
                                         "SASL_PLAINTEXT, SASL_SSL)")
    kafka_sasl_mechanism: str | None = Field(None, description="Kafka SASL mechanism (PLAIN, SCRAM-SHA-256, "
                                             "SCRAM-SHA-512)")
    kafka_sasl_username: str | None = Field(None, description="Kafka SASL username")
    kafka_sasl_password: str | None = Field(None, description="Kafka SASL password")
    kafka_sasl_password_file: Path | None = Field(None, description="file holding the Kafka SASL password")
    kafka_ssl_ca_file: Path | None = Field(None, description="CA bundle (PEM) that signed Kafka's certificates "
                                           "(SSL, SASL_SSL; e.g. Strimzi's cluster CA)")

    secret_files = (("kafka_sasl_password", "kafka_sasl_password_file", "Kafka SASL password"),)

    @model_validator(mode="after")
    def _known_mechanism(self) -> KafkaConnectionSettings:
        if self.kafka_sasl_mechanism and self.kafka_sasl_mechanism not in _LOGIN_MODULES:
            raise ValueError(f"kafka_sasl_mechanism must be one of {', '.join(_LOGIN_MODULES)}, "
                             f"not {self.kafka_sasl_mechanism!r}")
        return self

    def kafka_security(self) -> dict:
        """kafka-python's keyword arguments for signing in."""
        extra: dict = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_ssl_ca_file:
            extra["ssl_cafile"] = str(self.kafka_ssl_ca_file)
        if self.kafka_sasl_mechanism:
            extra.update(
                sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_plain_username=self.kafka_sasl_username,
                sasl_plain_password=self.kafka_sasl_password,
            )
        return extra

    def spark_kafka_options(self) -> dict[str, str]:
        """The ``kafka.*`` options of Spark's Kafka source and sink: bootstrap servers and signing in."""
        options = {"kafka.bootstrap.servers": self.kafka_bootstrap,
                   "kafka.security.protocol": self.kafka_security_protocol}
        if self.kafka_ssl_ca_file:
            # Kafka's Java client reads a PEM bundle directly as a trust store (Kafka 2.7 and later).
            options["kafka.ssl.truststore.type"] = "PEM"
            options["kafka.ssl.truststore.location"] = str(self.kafka_ssl_ca_file)
        if self.kafka_sasl_mechanism:
            user = (self.kafka_sasl_username or "").replace("\\", "\\\\").replace('"', '\\"')
            password = (self.kafka_sasl_password or "").replace("\\", "\\\\").replace('"', '\\"')
            options["kafka.sasl.mechanism"] = self.kafka_sasl_mechanism
            options["kafka.sasl.jaas.config"] = (
                f'{_LOGIN_MODULES[self.kafka_sasl_mechanism]} required username="{user}" password="{password}";')
        return options
