"""A Spark standalone cluster on this machine: one master and one worker, started with pyspark's own
launcher (``bin/spark-class``), for running the processing job exactly as on a real cluster.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from deploy.servers import ManagedServer, free_port


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _spark_env(state_dir: Path) -> dict[str, str]:
    return {
        "SPARK_HOME": str(spark_home()),
        # The cluster stays on loopback: the machine's other address may not route back to it.
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(state_dir / "logs"),
        "SPARK_WORKER_DIR": str(state_dir / "work"),
    }


class _SparkDaemon(ManagedServer):
    main_class = ""

    def __init__(self, state_dir: Path, port: int, host: str = "127.0.0.1") -> None:
        super().__init__(state_dir, port, host)
        self.webui_port = free_port()

    def _ports(self) -> list[int]:
        return [self.port, self.webui_port]

    def _prepare(self) -> None:
        (self.state_dir / "work").mkdir(parents=True, exist_ok=True)

    def _env(self) -> dict[str, str]:
        return {**os.environ, **_spark_env(self.state_dir)}

    def _base(self) -> list[str]:
        return [str(spark_home() / "bin" / "spark-class"), self.main_class]


class SparkMaster(_SparkDaemon):
    name = "spark-master"
    main_class = "org.apache.spark.deploy.master.Master"
    ready_timeout = 60.0

    @property
    def endpoint(self) -> str:
        return f"spark://{self.host}:{self.port}"

    def _command(self) -> list[str]:
        return self._base() + ["--host", self.host, "--port", str(self.port), "--webui-port", str(self.webui_port)]

    def _probe(self) -> bool:
        with socket.create_connection((self.host, self.port), timeout=1.0):
            return True


class SparkWorker(_SparkDaemon):
    name = "spark-worker"
    main_class = "org.apache.spark.deploy.worker.Worker"
    ready_timeout = 60.0

    def __init__(self, state_dir: Path, master: SparkMaster, cores: int = 2, memory: str = "1g") -> None:
        super().__init__(state_dir, free_port(), master.host)
        self.master = master
        self.cores = cores
        self.memory = memory

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def _command(self) -> list[str]:
        return self._base() + [
            self.master.endpoint, "--host", self.host, "--port", str(self.port), "--webui-port",
            str(self.webui_port), "--cores", str(self.cores), "--memory", self.memory,
            "--work-dir", str(self.state_dir / "work"),
        ]

    def _probe(self) -> bool:
        # Registered with the master: the master's JSON status lists it as ALIVE.
        import json
        import urllib.request

        url = f"http://{self.master.host}:{self.master.webui_port}/json/"
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (our own local URL)
            status = json.load(resp)
        return any(w.get("state") == "ALIVE" and str(w.get("port")) == str(self.port)
                   for w in status.get("workers", []))
