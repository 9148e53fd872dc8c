"""A bridge that retires (POST /retire: unsubscribe, drain its session into Kafka, acknowledge, disconnect with
session expiry 0) hands its share of the shared subscription to the others and loses nothing, against the real
Mosquitto and Kafka. Retirement is driven as Kubernetes drives it: the bridge pods' preStop hook
(deploy/kubernetes/base/bridge-prestop.py) asks a stand-in for the Kubernetes API for the StatefulSet's
replicas and retires the bridge only when the StatefulSet scales down past it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deploy.servers import Kafka, Mosquitto
from deploy.wait import wait_until
from tests.integration.test_bridge_delivery import (
    Publisher,
    Run,
    TopicReader,
    check_unchanged,
    make_run,
)

HOOK = Path(__file__).resolve().parents[2] / "deploy/kubernetes/base/bridge-prestop.py"


class FakeKubernetesApi:
    """Answers GET .../statefulsets/<name> with spec.replicas (a stand-in: no cluster here)."""

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        self.requests: list[tuple[str, str]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                api.requests.append((self.path, self.headers.get("Authorization", "")))
                body = json.dumps({"kind": "StatefulSet", "spec": {"replicas": api.replicas}}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def run(mosquitto: Mosquitto, kafka: Kafka, tmp_path: Path) -> Iterator[Run]:
    with make_run(mosquitto, kafka.endpoint, tmp_path) as r:
        yield r


@pytest.fixture
def k8s_api() -> Iterator[FakeKubernetesApi]:
    api = FakeKubernetesApi(replicas=2)
    yield api
    api.close()


def run_hook(api: FakeKubernetesApi, tmp_path: Path, pod: str, health_port: int) -> subprocess.CompletedProcess:
    """The preStop hook as the kubelet runs it in the bridge's container: its environment, its service account."""
    sa = tmp_path / "serviceaccount"
    sa.mkdir(exist_ok=True)
    (sa / "namespace").write_text("tsdemo")
    (sa / "token").write_text("a-test-token")
    env = {"TSDEMO_CLIENT_ID": pod, "TSDEMO_HEALTH_PORT": str(health_port), "TSDEMO_K8S_API": api.url,
           "TSDEMO_K8S_SA_DIR": str(sa), "TSDEMO_RETIRE_WAIT_S": "120"}
    return subprocess.run([sys.executable, str(HOOK)], env=env, capture_output=True, text=True, timeout=180)


def test_a_bridge_retiring_mid_stream_hands_its_share_over_and_loses_nothing(run: Run, k8s_api, tmp_path):
    # A small window, so a burst leaves the retiring bridge's session a backlog to drain when it unsubscribes.
    stays = run.bridge("ingest-0", max_inflight=5)
    leaves = run.bridge("ingest-1", max_inflight=5)
    pub = Publisher(run)
    pub.stream(0, 4000, pace_s=0.002)
    wait_until(lambda: leaves.metric("tsdemo_ingest_forwarded_total") >= 500, 60, "ingest-1 to forward 500")

    # A rollout or eviction (the pod stays in the StatefulSet): the hook leaves the bridge alone.
    kept = run_hook(k8s_api, tmp_path, "ingest-1", leaves.health_port)
    assert kept.returncode == 0 and "keeping its MQTT session" in kept.stdout, kept.stdout + kept.stderr
    assert leaves.healthy()
    # The scale-down to one replica: ingest-1 retires while the stream goes on, right after a burst, and
    # exits by itself. The burst goes out while ingest-1 is stopped, so its share is still in its session
    # when it unsubscribes: left running, a fast machine's ingest-1 kept up with the burst and had nothing
    # left to drain.
    burst = Publisher(run)
    assert leaves.proc is not None
    os.kill(leaves.proc.pid, signal.SIGSTOP)
    try:
        burst.publish(10_000, 13_000)
        burst.acked()  # every message is in a session: ingest-1's share waits in its own
    finally:
        os.kill(leaves.proc.pid, signal.SIGCONT)
    k8s_api.replicas = 1
    retired = run_hook(k8s_api, tmp_path, "ingest-1", leaves.health_port)
    assert retired.returncode == 0 and "the bridge exited" in retired.stdout, retired.stdout + retired.stderr
    assert leaves.proc is not None and leaves.proc.wait(10) == 0
    assert k8s_api.requests == [("/apis/apps/v1/namespaces/tsdemo/statefulsets/ingest", "Bearer a-test-token")] * 2
    log = leaves.tail(200)
    retired_line = next((line for line in log.splitlines() if '"msg": "bridge retired"' in line), None)
    assert retired_line, log
    leaves_forwarded = json.loads(retired_line)["forwarded"]
    ended = next(line for line in log.splitlines() if "ended the session" in line)
    assert json.loads(ended)["drained"] > 0, "the session held no backlog: the drain was not exercised"

    acked = pub.acked() | burst.acked()
    burst.sent.update(pub.sent)
    burst.topics.update(pub.topics)
    reader = TopicReader(run.kafka_endpoint, run.topic)
    counts = reader.read_until(acked)
    # Everything once, and nothing waited for ingest-1 to come back: it never does, its session is gone.
    assert counts == Counter({mid: 1 for mid in acked})
    check_unchanged(reader, burst)
    assert leaves_forwarded >= 500 and leaves_forwarded + stays.metric("tsdemo_ingest_forwarded_total") == len(acked)
    pub.close()
    burst.close()


def test_retire_is_refused_from_anywhere_but_loopback_and_to_anything_but_post(run: Run):
    bridge = run.bridge("b0")
    with pytest.raises(urllib.error.HTTPError) as got:
        urllib.request.urlopen(f"http://127.0.0.1:{bridge.health_port}/retire", timeout=5)
    assert got.value.code in (404, 405)
    import socket

    import psutil

    # A non-loopback address of this machine: the health port listens on every address.
    outside = next((a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                    if a.family == socket.AF_INET and not a.address.startswith("127.")), None)
    if outside is None:
        pytest.skip("this machine has no address but loopback")
    request = urllib.request.Request(f"http://{outside}:{bridge.health_port}/retire", method="POST")
    with pytest.raises(urllib.error.HTTPError) as got:
        urllib.request.urlopen(request, timeout=5)
    assert got.value.code == 403
    assert bridge.healthy()
