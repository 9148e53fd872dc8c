"""preStop hook of the bridge pods (ingest.yaml): retire the bridge when the StatefulSet scales down past it.

A pod removed for good, its ordinal at or above the StatefulSet's spec.replicas, asks its bridge to retire
(POST /retire on the health port; the bridge accepts it from loopback only): the bridge unsubscribes from the
shared subscription, drains what its MQTT session holds into Kafka, acknowledges it and disconnects with
session expiry 0, then exits. The hook waits for that, within the pod's grace period. Any other stop (a
rollout, an eviction, a node drain, a deleted StatefulSet, an API that does not answer) keeps today's
behaviour: the hook does nothing, SIGTERM follows, and the session waits for the pod that comes back under the
same name.

Standard library only: it runs with the image's Python. Reads the StatefulSet with the pod's service account
(Role ingest-scale-reader). Settings from the container's environment: TSDEMO_CLIENT_ID (the pod name),
TSDEMO_HEALTH_PORT; TSDEMO_K8S_API and TSDEMO_K8S_SA_DIR only for tests.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request

SA_DIR = os.environ.get("TSDEMO_K8S_SA_DIR", "/var/run/secrets/kubernetes.io/serviceaccount")


def log(msg: str) -> None:
    # The kubelet shows a failed hook's output in the pod's events; stdout is enough.
    print(f"bridge-prestop: {msg}", flush=True)


def desired_replicas(statefulset: str) -> int | None:
    """spec.replicas of the StatefulSet, or None when it cannot be read (gone, no access, no answer)."""
    namespace = open(f"{SA_DIR}/namespace").read().strip()
    token = open(f"{SA_DIR}/token").read().strip()
    api = os.environ.get("TSDEMO_K8S_API") or (
        f"https://{os.environ['KUBERNETES_SERVICE_HOST']}:{os.environ.get('KUBERNETES_SERVICE_PORT', '443')}")
    context = ssl.create_default_context(cafile=f"{SA_DIR}/ca.crt") if api.startswith("https:") else None
    request = urllib.request.Request(f"{api}/apis/apps/v1/namespaces/{namespace}/statefulsets/{statefulset}",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as resp:
            return int(json.load(resp)["spec"]["replicas"])
    except (OSError, ValueError, KeyError) as exc:
        log(f"cannot read statefulset {namespace}/{statefulset}: {exc}")
        return None


def retire(health_port: int, wait_s: float) -> bool:
    """POST /retire, then wait until the bridge has exited (its health port stops answering)."""
    base = f"http://127.0.0.1:{health_port}"
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{base}/retire", method="POST"), timeout=10) as resp:
            log(f"retiring: {resp.read().decode().strip()}")
    except OSError as exc:
        log(f"the bridge did not take /retire: {exc}")
        return False
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=2).close()
        except urllib.error.HTTPError:
            pass  # 503 while draining: still there
        except OSError:
            return True
        time.sleep(1)
    return False


def main() -> int:
    pod = os.environ["TSDEMO_CLIENT_ID"]
    statefulset, _, ordinal = pod.rpartition("-")
    if not ordinal.isdigit():
        log(f"{pod} is not a StatefulSet pod name; nothing to do")
        return 0
    replicas = desired_replicas(statefulset)
    if replicas is None or int(ordinal) < replicas:
        log(f"{pod} stays in the StatefulSet (replicas {replicas}): keeping its MQTT session")
        return 0
    log(f"{pod} is removed by a scale-down to {replicas}: retiring its bridge")
    if retire(int(os.environ.get("TSDEMO_HEALTH_PORT", "8080")), float(os.environ.get("TSDEMO_RETIRE_WAIT_S", "280"))):
        # Its log says "bridge retired", or why it stopped keeping its session instead.
        log("the bridge exited")
        return 0
    log("the bridge did not retire and exit in time; SIGTERM follows")
    return 1


if __name__ == "__main__":
    sys.exit(main())
