"""The servers the project runs itself, each as a child process on this machine: Mosquitto (with its
security), Kafka, InfluxDB, Grafana and the Spark standalone cluster, and the Maven artifacts Kafka and
Spark need. Grafana and Spark are imported from their modules (they pull in dashboards and pyspark)."""

from deploy.servers.base import (
    ManagedServer,
    PortInUseError,
    ServerError,
    ServerExitedError,
    ServerNotReadyError,
    free_port,
    port_is_free,
    start_servers,
    stop_process,
    stop_servers,
)
from deploy.servers.influxdb import InfluxDB
from deploy.servers.kafka import Kafka, create_topics
from deploy.servers.mosquitto import Mosquitto, mqtt_connect_ok

__all__ = [
    "InfluxDB", "Kafka", "ManagedServer", "Mosquitto", "PortInUseError", "ServerError", "ServerExitedError",
    "ServerNotReadyError", "create_topics", "free_port", "mqtt_connect_ok", "port_is_free", "start_servers",
    "stop_process", "stop_servers",
]
