"""What the container tests share: our images run on the host's network, waits for their health and
exit, `docker stop` timed against a grace period. See conftest.py for how the tests run."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path

# Ryuk, testcontainers' reaper, is an image from Docker Hub, which may be unreachable: the fixtures here
# remove what they start themselves (before testcontainers reads its configuration).
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")

import docker  # noqa: E402
from testcontainers.core.container import DockerContainer  # noqa: E402

from deploy.servers import free_port  # noqa: E402
from tests.support.validate.compose import COMPOSE_DIR, read_dotenv  # noqa: E402

PINS = read_dotenv(COMPOSE_DIR / ".env")
SERVICES = ("generator", "ingest", "processing")
JOBS = ("storage-init", "dashboards-init")
# The uid every image of ours runs as (deploy/images/Dockerfile's runtime stage).
UID = 10001


def image(name: str) -> str:
    registry = os.environ.get("TSDEMO_REGISTRY") or PINS["TSDEMO_REGISTRY"]
    return f"{registry}/{name}:{os.environ.get('TSDEMO_TAG') or PINS['TSDEMO_TAG']}"


def container(name: str, env: dict[str, str] | None = None, command: list[str] | None = None,
              volumes: dict[Path, str] | None = None) -> DockerContainer:
    """One of our images, on the host's network, with the same hardening as deploy/compose (no
    capabilities, no new privileges, an init); not started."""
    c = DockerContainer(image(name)).with_kwargs(
        network_mode="host", cap_drop=["ALL"], security_opt=["no-new-privileges:true"], init=True,
    ).with_tmpfs_mount("/tmp")
    for key, value in (env or {}).items():
        c.with_env(key, value)
    if command:
        c.with_command(command)
    for host, target in (volumes or {}).items():
        c.with_volume_mapping(str(host), target, "rw")
    return c


def remove(c: DockerContainer) -> None:
    try:
        c.stop()
    except docker.errors.NotFound:
        pass


def state(c: DockerContainer) -> dict:
    wrapped = c.get_wrapped_container()
    wrapped.reload()
    return wrapped.attrs["State"]


def logs(c: DockerContainer, lines: int = 40) -> str:
    out, err = c.get_logs()
    text = (out + err).decode(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def wait_healthy(c: DockerContainer, timeout: float) -> float:
    """Waits until the image's own HEALTHCHECK says healthy; returns the seconds it took."""
    started = time.monotonic()
    while True:
        s = state(c)
        health = (s.get("Health") or {}).get("Status")
        if health == "healthy":
            return time.monotonic() - started
        assert s["Status"] == "running", f"{c.image} exited {s['ExitCode']}:\n{logs(c)}"
        # "unhealthy" is not final: on a loaded machine a slow start outlasts the start period, and the next
        # passing check turns it healthy. The timeout decides.
        assert time.monotonic() - started < timeout, (
            f"{c.image} not healthy after {timeout}s ({health}: {(s.get('Health') or {}).get('Log', [])[-1:]}):\n"
            f"{logs(c)}")
        time.sleep(1)


def wait_exit(c: DockerContainer, timeout: float) -> int:
    result = c.get_wrapped_container().wait(timeout=timeout)
    return int(result["StatusCode"])


def stop(c: DockerContainer, grace: int) -> tuple[int, float]:
    """`docker stop` with the compose file's stop_grace_period: (exit code, seconds it took)."""
    started = time.monotonic()
    c.get_wrapped_container().stop(timeout=grace)
    took = time.monotonic() - started
    s = state(c)
    assert s["Status"] == "exited", s
    return s["ExitCode"], took


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def check_service(c: DockerContainer, port: int) -> None:
    """Non-root, /healthz 200 and Prometheus text on /metrics, all on the health port."""
    uid = c.exec(["python", "-c", "import os; print(os.getuid(), os.getgid())"])
    assert uid.exit_code == 0 and uid.output.decode().split() == [str(UID), str(UID)], uid
    status, body = http_get(port, "/healthz")
    assert status == 200, (status, body)
    status, body = http_get(port, "/metrics")
    assert status == 200 and "# TYPE " in body, (status, body[:500])


def health_env() -> tuple[int, dict[str, str]]:
    port = free_port()
    return port, {"TSDEMO_HEALTH_PORT": str(port)}


def writable_dir(path: Path) -> Path:
    """A host folder the image's user may write (it is not this machine's user)."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())
