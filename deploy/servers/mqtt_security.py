"""Mosquitto as compose and Kubernetes run it, for the local stack and the tests.

One broker configuration, ``deploy/compose/mosquitto/mosquitto.conf``, and one script that writes what it
reads at start, ``deploy/compose/mosquitto/mqtt-auth.sh`` (the password file, hashed; the ACL file; the
``conf.d`` drop-ins for a TLS listener or the anonymous demo opt-in). Locally both run as they are, only the
container paths mapped (``broker_config``), so what the tests check is what is deployed.

Roles, by MQTT username (the ACLs are in mqtt-auth.sh):
- ``tsdemo-bridge`` may only subscribe (read ``sensors/#``, shared subscriptions included);
- ``tsdemo-fleet`` (the simulator, one connection for many devices) may only publish under ``sensors/``;
- any other user is a device, and may only publish to its own topic ``sensors/<site>/<username>``.

``ANONYMOUS_DEMO`` is the named opt-in of the one-machine demo and the tests: clients without credentials
may do anything (``MQTT_ALLOW_ANONYMOUS_DEMO=true`` in compose's credentials.env does the same there).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO_DIR = Path(__file__).resolve().parents[1] / "compose" / "mosquitto"
DEPLOYED_CONFIG = MOSQUITTO_DIR / "mosquitto.conf"
AUTH_SCRIPT = MOSQUITTO_DIR / "mqtt-auth.sh"
BRIDGE_USER = "tsdemo-bridge"
FLEET_USER = "tsdemo-fleet"
#: where the deployed config expects what mqtt-auth.sh writes (an emptyDir or a volume in the containers)
CONTAINER_AUTH_DIR = "/mosquitto/auth"


@dataclass(frozen=True)
class MqttTls:
    """A TLS listener on ``port``: ``directory`` holds ``ca.crt``, ``tls.crt`` and ``tls.key`` (cert-manager's
    names). ``require_certificate``: clients must present a certificate the CA signed, besides a password."""

    directory: Path
    port: int
    require_certificate: bool = False


@dataclass(frozen=True)
class MqttSecurity:
    """Who may sign in: the bridge, the fleet simulator, devices (``device_id -> password``), or anyone
    (``allow_anonymous_demo``). Passwords go to files in the broker's state directory, readable by us only."""

    bridge_password: str | None = None
    fleet_password: str | None = None
    devices: dict[str, str] = field(default_factory=dict)
    tls: MqttTls | None = None
    allow_anonymous_demo: bool = False

    @property
    def anonymous(self) -> bool:
        return self.allow_anonymous_demo

    def prepare(self, state_dir: Path, host: str) -> Path:
        """Runs mqtt-auth.sh into ``state_dir/auth`` (returned) from secret files in ``state_dir/secrets``."""
        secrets, auth = state_dir / "secrets", state_dir / "auth"
        secrets.mkdir(mode=0o700, exist_ok=True)
        env = {"MQTT_AUTH_DIR": str(auth), "MQTT_ALLOW_ANONYMOUS_DEMO": str(self.allow_anonymous_demo).lower()}

        def secret(name: str, text: str) -> str:
            path = secrets / name
            path.unlink(missing_ok=True)
            path.touch(mode=0o600)
            path.write_text(text)
            return str(path)

        if self.bridge_password is not None:
            env["MQTT_BRIDGE_PASSWORD_FILE"] = secret("bridge-password", self.bridge_password + "\n")
        if self.fleet_password is not None:
            env["MQTT_FLEET_PASSWORD_FILE"] = secret("fleet-password", self.fleet_password + "\n")
        if self.devices:
            env["MQTT_DEVICES_FILE"] = secret("devices", "".join(f"{d}:{p}\n" for d, p in self.devices.items()))
        if self.tls is not None:
            env.update(MQTT_TLS_DIR=str(self.tls.directory), MQTT_TLS_PORT=str(self.tls.port),
                       MQTT_TLS_BIND_ADDRESS=host,
                       MQTT_TLS_REQUIRE_CERTIFICATE=str(self.tls.require_certificate).lower())
        run_auth_script(env)
        return auth


#: The one-machine demo's named opt-in: no credentials needed (compose and Kubernetes never do this by default).
ANONYMOUS_DEMO = MqttSecurity(allow_anonymous_demo=True)


@dataclass(frozen=True)
class PreparedAuth:
    """An auth directory mqtt-auth.sh already wrote (compose's credentials-init, run by a test)."""

    auth_dir: Path
    anonymous: bool = False

    def prepare(self, state_dir: Path, host: str) -> Path:
        if not (self.auth_dir / "passwd").is_file():
            raise FileNotFoundError(f"{self.auth_dir} holds no passwd: run mqtt-auth.sh into it first")
        return self.auth_dir


def run_auth_script(env: dict[str, str]) -> str:
    """``sh mqtt-auth.sh`` with ``env`` over ours; its output, or a RuntimeError with what it said."""
    done = subprocess.run(["sh", str(AUTH_SCRIPT)], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{AUTH_SCRIPT.name} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def broker_config(*, port: int, host: str, data_dir: Path, auth_dir: Path, log_path: Path, user: str) -> str:
    """The deployed mosquitto.conf with only what a container sees differently mapped: the listener's port
    and address, the data, auth and log paths, and the user to run as."""
    text = DEPLOYED_CONFIG.read_text()
    for pattern, new in ((r"^listener 1883$", f"listener {port} {host}"),
                         (r"^persistence_location /mosquitto/data/$", f"persistence_location {data_dir}/"),
                         (r"^log_dest stdout$", f"log_dest file {log_path}")):
        text, n = re.subn(pattern, new, text, flags=re.M)
        if n != 1:
            raise ValueError(f"{DEPLOYED_CONFIG} has no line {pattern!r} (once) to map for a local broker")
    if text.count(CONTAINER_AUTH_DIR) < 3:
        raise ValueError(f"{DEPLOYED_CONFIG} no longer reads password_file, acl_file and conf.d from "
                         f"{CONTAINER_AUTH_DIR}")
    text = text.replace(CONTAINER_AUTH_DIR, str(auth_dir))
    return (f"# written by deploy.servers on every start from {DEPLOYED_CONFIG.relative_to(MOSQUITTO_DIR.parents[2])}"
            f"; edits are lost\n{text}\n"
            "# Started as root, mosquitto would switch to the \"mosquitto\" user, which cannot write our state dir.\n"
            f"user {user}\n")
