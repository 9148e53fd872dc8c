"""Kafka (KRaft, one node acting as broker and controller) as a child process, from the Maven Central jars
with the machine's JDK, and the topic creation every deployment of ours needs."""

from __future__ import annotations

import base64
import socket
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path

from deploy.servers import artifacts
from deploy.servers.base import ManagedServer, ServerError, client_host, log


def _kafka_cluster_id() -> str:
    # Kafka's own format (Uuid.toString): 16 random bytes, URL-safe base64 without padding, and
    # never starting with "-", which its command line tools would read as a flag.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


class Kafka(ManagedServer):
    """A single Kafka node in KRaft mode, broker and controller in one JVM, with a static quorum of one.

    The static quorum (``controller.quorum.voters``) rather than Kafka 4's dynamic one keeps the voter's
    address in the config instead of in the formatted metadata log, so a restart on other ports works.
    """

    name = "kafka"
    ready_timeout = 90.0

    def __init__(
        self,
        state_dir: Path,
        port: int,
        controller_port: int,
        host: str = "127.0.0.1",
        cache_dir: Path | None = None,
        *,
        heap: str = "512m",
        properties: Mapping[str, str | int] | None = None,
        version: str | None = None,
    ) -> None:
        super().__init__(state_dir, port, host)
        self.controller_port = controller_port
        self.cache_dir = Path(cache_dir) if cache_dir is not None else artifacts.default_cache_dir()
        self.heap = heap
        self.version = version or artifacts.kafka_version()
        self.extra_properties = dict(properties or {})
        self.config_path = self.state_dir / "server.properties"
        self.log4j_config = self.state_dir / "log4j2.xml"
        self.classpath_file = self.state_dir / "classpath.args"
        self.data_dir = self.state_dir / "data"
        self.log_path = self.state_dir / "kafka.log"
        self._classpath: str | None = None

    @property
    def endpoint(self) -> str:
        """The bootstrap servers string, ``host:port``."""
        return f"{client_host(self.host)}:{self.port}"

    def _ports(self) -> list[int]:
        return [self.port, self.controller_port]

    @property
    def classpath(self) -> str:
        """The broker's jars, resolved from Maven Central into the cache on first use (tens of seconds)."""
        if self._classpath is None:
            self._classpath = artifacts.kafka_classpath(self.cache_dir, self.version)
        return self._classpath

    def properties(self) -> dict[str, str]:
        advertised = client_host(self.host)
        props: dict[str, str | int] = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.voters": f"1@{advertised}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{advertised}:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # one node: every internal topic must live with a single replica
            "offsets.topic.replication.factor": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            # fewer offsets partitions than the default 50: the first consumer group comes up faster
            "offsets.topic.num.partitions": 8,
            "num.partitions": 4,
            # topics are created on purpose, with their partition counts, by create_topics()
            "auto.create.topics.enable": "false",
            # no waiting for more members to join a new group: tests and restarts consume at once
            "group.initial.rebalance.delay.ms": 0,
            # two cores: Kafka's thread pools default to sizes meant for big brokers
            "num.network.threads": 2,
            "num.io.threads": 4,
            "background.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
            "log.retention.hours": 168,
        }
        props.update(self.extra_properties)
        return {k: str(v) for k, v in props.items()}

    def _java(self, main_class: str, *args: str) -> list[str]:
        return [
            artifacts.java_binary(),
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_config}",
            # Log4j's own hook would stop logging while Kafka's shutdown hook still reports its progress.
            "-Dlog4j2.shutdownHookEnabled=false",
            # The classpath (~50 jars) goes in a Java argument file so `ps` and our logs stay readable.
            f"@{self.classpath_file}",
            main_class,
            *args,
        ]

    def _write_classpath_file(self) -> None:
        # Argument-file syntax: a quoted token, backslashes doubled.
        quoted = self.classpath.replace("\\", "\\\\").replace('"', '\\"')
        self.classpath_file.write_text(f'-cp "{quoted}"\n')

    def is_formatted(self) -> bool:
        return (self.data_dir / "meta.properties").exists()

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        artifacts.write_kafka_log4j2_config(self.log4j_config, self.log_path)
        self._write_classpath_file()
        self.config_path.write_text(
            "# written by deploy.servers on every start; edits are lost\n"
            + "".join(f"{k}={v}\n" for k, v in self.properties().items())
        )
        if self.is_formatted():
            return  # formatting again would fail, and must never wipe the data of a restart
        cmd = self._java(
            "kafka.tools.StorageTool", "format", "-t", _kafka_cluster_id(), "-c", str(self.config_path)
        )
        with open(self.console_log, "ab") as out:
            out.write(f"--- formatting: {' '.join(cmd)}\n".encode())
            out.flush()
            proc = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=120
            )
        if proc.returncode != 0:
            raise ServerError(f"formatting Kafka storage in {self.data_dir} failed\n{self.log_tail()}")

    def _command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.config_path))

    def _probe(self) -> bool:
        # A cheap TCP check first: kafka-python logs a warning for every refused connection.
        with socket.create_connection((client_host(self.host), self.port), timeout=1.0):
            pass
        admin = _admin(self.endpoint, timeout_s=5.0)
        try:
            return bool(admin.describe_cluster().get("brokers"))
        finally:
            admin.close()


def _admin(bootstrap: str, timeout_s: float):  # -> kafka.KafkaAdminClient (imported lazily: heavy)
    from kafka import KafkaAdminClient

    ms = int(timeout_s * 1000)
    return KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="tsdemo-admin", request_timeout_ms=ms, bootstrap_timeout_ms=ms
    )


def create_topics(
    bootstrap: str, topics: Mapping[str, int], replication_factor: int = 1, timeout: float = 30.0
) -> list[str]:
    """Create each missing topic with its partition count and wait until every partition has a leader.

    Idempotent: topics that exist are left as they are (a partition count that differs is only logged).
    Returns the names it created.
    """
    from kafka.errors import TopicAlreadyExistsError

    admin = _admin(bootstrap, timeout)
    try:
        existing = set(admin.list_topics())
        missing = {name: n for name, n in topics.items() if name not in existing}
        if missing:
            specs = {
                name: {"num_partitions": n, "replication_factor": replication_factor}
                for name, n in missing.items()
            }
            result = admin.create_topics(specs, timeout_ms=int(timeout * 1000), raise_errors=False)
            for topic in result["topics"]:
                code, msg = topic["error_code"], topic.get("error_message")
                # another caller may have created it between our list and our create
                if code not in (0, TopicAlreadyExistsError.errno):
                    raise ServerError(f"creating topic {topic['name']} on {bootstrap}: error {code}: {msg}")
            admin.wait_for_topics(list(missing), timeout_ms=int(timeout * 1000))
            log.info("created topics %s on %s", missing, bootstrap)
        present = [name for name in topics if name in existing]
        if present:
            for desc in admin.describe_topics(present):
                name = desc.get("name") or desc.get("topic")
                want, have = topics.get(name), len(desc.get("partitions") or [])
                if want is not None and want != have:
                    log.warning("topic %s has %d partitions, not %d; left as it is", name, have, want)
        return list(missing)
    finally:
        admin.close()


