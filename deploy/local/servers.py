"""Runs the three real servers of the local stack as child processes: Mosquitto, Kafka (KRaft, one
node acting as broker and controller) and InfluxDB 1.x. Each gets its own directory for config,
data and logs, so stopping and starting again on the same directory keeps the data.

Tests run them on free ports (``free_port()``); the local stack runs them on 1883, 9092 and 8086.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import pwd
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from deploy.local import artifacts
from deploy.local.mqtt_security import ANONYMOUS_DEMO, MqttSecurity, PreparedAuth, broker_config

log = logging.getLogger("deploy.servers")

MOSQUITTO_BIN = "/usr/sbin/mosquitto"
INFLUXD_BIN = "/usr/bin/influxd"


class ServerError(RuntimeError):
    """A server could not be started, did not become ready, or exited."""


class PortInUseError(ServerError):
    """A port a server needs is taken before it starts."""


class ServerExitedError(ServerError):
    """The server process exited while we waited for it; the message ends with its log."""


class ServerNotReadyError(ServerError, TimeoutError):
    """The server kept running but did not answer its readiness check in time."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        # The servers set SO_REUSEADDR too, so a port left in TIME_WAIT by a stopped server counts as
        # free, while one with a live listener (on this address or the wildcard) does not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the OS's pick, so parallel callers get different ones)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _client_host(host: str) -> str:
    # A server bound to the wildcard address is reached through loopback.
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def _port_holder(port: int) -> str:
    """`` (pid 123: mosquitto)`` for the process listening on ``port``, when psutil can tell."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return f" (by pid {conn.pid}: {psutil.Process(conn.pid).name()})"
    except Exception:  # best effort: only decorates the error message
        pass
    return ""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def stop_process(proc: subprocess.Popen, timeout: float = 60.0, sig: int = signal.SIGTERM,
                 name: str | None = None) -> int:
    """``sig`` (SIGTERM: our services drain and exit cleanly on it), then SIGKILL after ``timeout`` seconds;
    returns the exit status. A process that has already exited is only reaped."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", name or f"pid {proc.pid}", timeout)
            proc.kill()
            proc.wait()
    return proc.returncode


class ManagedServer(ABC):
    """A server run as a child process in its own session, with its config, data and logs in ``state_dir``.

    ``start()`` then ``wait_ready()``; ``stop()`` (SIGTERM, then SIGKILL) or ``kill()``. Also a context
    manager that starts, waits and stops.
    """

    name: ClassVar[str]
    #: time to first readiness on this 2-core machine, with room; callers may pass their own
    ready_timeout: ClassVar[float] = 30.0

    def __init__(self, state_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        self.state_dir = Path(state_dir).resolve()
        self.port = port
        self.host = host
        self._proc: subprocess.Popen[bytes] | None = None

    # -- what each server defines -------------------------------------------------------------------
    @property
    @abstractmethod
    def endpoint(self) -> str:
        """The address clients use."""

    @abstractmethod
    def _prepare(self) -> None:
        """Write config files and initialise storage; runs before every start."""

    @abstractmethod
    def _command(self) -> list[str]: ...

    @abstractmethod
    def _probe(self) -> bool:
        """One readiness check: True when the server serves clients."""

    def _ports(self) -> list[int]:
        return [self.port]

    def _env(self) -> dict[str, str] | None:
        """The child's environment; None inherits ours."""
        return None

    @property
    def console_log(self) -> Path:
        """The server's stdout and stderr, appended to across restarts."""
        return self.state_dir / f"{self.name}.out"

    @property
    def log_files(self) -> list[Path]:
        return [self.console_log]

    # -- lifecycle -------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Write the config and launch the server; returns at once (see ``wait_ready``)."""
        if self.is_running():
            raise ServerError(f"{self.name} is already running (pid {self.pid})")
        for port in self._ports():
            if not port_is_free(port, self.host):
                raise PortInUseError(f"port {port} for {self.name} is already in use{_port_holder(port)}")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        cmd = self._command()
        with open(self.console_log, "ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            out.flush()
            # Own session: a Ctrl-C in the terminal reaches the stack, which stops the servers in order,
            # instead of reaching every server at once.
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.state_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self._env(),
            )
        log.info("%s started (pid %s) on %s", self.name, self._proc.pid, self.endpoint)

    def wait_ready(self, timeout: float | None = None) -> float:
        """Block until the server answers its readiness check; returns the seconds waited.

        Raises ``ServerExitedError`` (with the tail of its logs) if the process exits meanwhile and
        ``ServerNotReadyError`` after ``timeout`` seconds.
        """
        if self._proc is None:
            raise ServerError(f"{self.name} was not started")
        timeout = self.ready_timeout if timeout is None else timeout
        started = time.monotonic()
        deadline = started + timeout
        while True:
            if self._proc.poll() is not None:
                status = self._proc.returncode
                raise ServerExitedError(
                    f"{self.name} exited with status {status} before it was ready\n{self.log_tail()}"
                )
            try:
                if self._probe():
                    waited = time.monotonic() - started
                    log.info("%s ready on %s after %.1fs", self.name, self.endpoint, waited)
                    return waited
            except Exception as exc:  # a probe failing in any way just means "not yet"
                log.debug("%s not ready yet: %s", self.name, exc)
            if time.monotonic() >= deadline:
                raise ServerNotReadyError(f"{self.name} not ready after {timeout:.0f}s\n{self.log_tail()}")
            time.sleep(0.2)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit status (None if never started).

        Safe to call when not started or already stopped.
        """
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", self.name, timeout)
                self._signal(signal.SIGKILL)
                self._proc.wait()
            log.info("%s stopped (status %s)", self.name, self._proc.returncode)
        return self._proc.returncode

    def kill(self) -> None:
        """SIGKILL without any chance to flush: for fault-injection tests."""
        if self.is_running():
            self._signal(signal.SIGKILL)
            assert self._proc is not None
            self._proc.wait()

    def restart(self, timeout: float | None = None) -> float:
        """``stop()``, ``start()`` and ``wait_ready()``; returns the seconds to ready."""
        self.stop()
        self.start()
        return self.wait_ready(timeout)

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        # The whole process group, in case a server ever forks helpers.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, sig)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of each of the server's non-empty log files, for error messages."""
        parts = []
        for path in self.log_files:
            tail = _tail(path, lines)
            if tail.strip():
                parts.append(f"--- {path}:\n{tail}")
        return "\n".join(parts) or f"(no output in {self.state_dir})"

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running() else "stopped"
        return f"<{type(self).__name__} {self.endpoint} {state} in {self.state_dir}>"


# -- Mosquitto -----------------------------------------------------------------------------------------


def mqtt_connect_ok(host: str, port: int, timeout: float = 2.0, *, any_answer: bool = False) -> bool:
    """A real MQTT 3.1.1 CONNECT; True when the broker answers CONNACK "accepted" (or, with
    ``any_answer``, any CONNACK: a broker with auth on refuses the anonymous probe, but it answers)."""
    client_id = f"tsdemo-probe-{os.getpid()}".encode()
    # protocol name "MQTT", level 4, flags: clean session, keep-alive 10s; payload: the client id
    body = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(client_id).to_bytes(2, "big") + client_id
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(bytes([0x10, len(body)]) + body)
        reply = b""
        while len(reply) < 4:
            chunk = sock.recv(4 - len(reply))
            if not chunk:
                return False
            reply += chunk
        with contextlib.suppress(OSError):
            sock.sendall(b"\xe0\x00")  # DISCONNECT, so the broker logs a clean goodbye
    return reply == b"\x20\x02\x00\x00" or (any_answer and reply[:2] == b"\x20\x02")


class Mosquitto(ManagedServer):
    """Mosquitto 2 with persistence, so queued QoS 1 messages of persistent sessions survive a restart.

    It runs the deployed configuration (deploy/compose/mosquitto/mosquitto.conf, paths mapped) with the users
    and ACLs ``security`` gives; ``ANONYMOUS_DEMO``, the named opt-in of the one-machine demo and most tests,
    lets clients in without credentials."""

    name = "mosquitto"
    ready_timeout = 15.0

    def __init__(self, state_dir: Path, port: int, host: str = "127.0.0.1", *,
                 security: MqttSecurity | PreparedAuth = ANONYMOUS_DEMO) -> None:
        super().__init__(state_dir, port, host)
        self.security = security
        self.config_path = self.state_dir / "mosquitto.conf"
        self.data_dir = self.state_dir / "data"
        self.log_path = self.state_dir / "mosquitto.log"

    @property
    def endpoint(self) -> str:
        return f"mqtt://{_client_host(self.host)}:{self.port}"

    @property
    def log_files(self) -> list[Path]:
        return [self.console_log, self.log_path]

    def _prepare(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        auth_dir = self.security.prepare(self.state_dir, self.host)
        self.config_path.write_text(broker_config(
            port=self.port, host=self.host, data_dir=self.data_dir, auth_dir=auth_dir, log_path=self.log_path,
            user=pwd.getpwuid(os.geteuid()).pw_name))

    def _command(self) -> list[str]:
        return [MOSQUITTO_BIN, "-c", str(self.config_path)]

    def _probe(self) -> bool:
        # With credentials required, the broker refusing our anonymous probe still shows it serves clients.
        return mqtt_connect_ok(_client_host(self.host), self.port, any_answer=not self.security.anonymous)


# -- Kafka ---------------------------------------------------------------------------------------------


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
        return f"{_client_host(self.host)}:{self.port}"

    @property
    def log_files(self) -> list[Path]:
        return [self.console_log, self.log_path]

    def _ports(self) -> list[int]:
        return [self.port, self.controller_port]

    @property
    def classpath(self) -> str:
        """The broker's jars, resolved from Maven Central into the cache on first use (tens of seconds)."""
        if self._classpath is None:
            self._classpath = artifacts.kafka_classpath(self.cache_dir, self.version)
        return self._classpath

    def properties(self) -> dict[str, str]:
        advertised = _client_host(self.host)
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
            "# written by deploy.local.servers on every start; edits are lost\n"
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
        with socket.create_connection((_client_host(self.host), self.port), timeout=1.0):
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


# -- InfluxDB ------------------------------------------------------------------------------------------


class InfluxDB(ManagedServer):
    """InfluxDB 1.x (1.6 on Debian) with HTTP on ``port`` and its RPC (backup) port moved off 8088.

    ``rpc_port`` defaults to ``port + 2`` (8086 -> 8088, influxd's own default) when that is free,
    else to any free port, so two instances on one machine do not clash.
    """

    name = "influxdb"
    ready_timeout = 30.0

    def __init__(
        self,
        state_dir: Path,
        port: int,
        host: str = "127.0.0.1",
        *,
        rpc_port: int | None = None,
        cq_run_interval: str = "1s",
        log_level: str = "info",
    ) -> None:
        super().__init__(state_dir, port, host)
        self.rpc_port = rpc_port
        self.cq_run_interval = cq_run_interval
        self.log_level = log_level
        self.config_path = self.state_dir / "influxdb.conf"

    @property
    def endpoint(self) -> str:
        return f"http://{_client_host(self.host)}:{self.port}"

    @property
    def console_log(self) -> Path:
        # influxd 1.x can only log to stderr, so its console output is its log.
        return self.state_dir / "influxdb.log"

    def _ports(self) -> list[int]:
        if self.rpc_port is None:  # chosen here, before the port check, and kept for restarts
            derived = self.port + 2
            free = derived < 65536 and port_is_free(derived, self.host)
            self.rpc_port = derived if free else free_port(self.host)
        return [self.port, self.rpc_port]

    def _prepare(self) -> None:
        for sub in ("meta", "data", "wal"):
            (self.state_dir / sub).mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            f"""# written by deploy.local.servers on every start; edits are lost
reporting-disabled = true
bind-address = "{self.host}:{self.rpc_port}"

[meta]
  dir = "{self.state_dir / "meta"}"

[data]
  dir = "{self.state_dir / "data"}"
  wal-dir = "{self.state_dir / "wal"}"
  query-log-enabled = true

[monitor]
  # the _internal database would grow on every start and show up in SHOW DATABASES
  store-enabled = false

[http]
  enabled = true
  bind-address = "{self.host}:{self.port}"
  auth-enabled = false
  # a line per write request would drown everything else at the demo's rates
  log-enabled = false

[continuous_queries]
  enabled = true
  log-enabled = true
  run-interval = "{self.cq_run_interval}"

[logging]
  format = "logfmt"
  level = "{self.log_level}"
  suppress-logo = true
"""
        )

    def _command(self) -> list[str]:
        return [INFLUXD_BIN, "-config", str(self.config_path)]

    def _probe(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/ping", timeout=2) as resp:
                return resp.status == 204
        except urllib.error.URLError:
            return False
