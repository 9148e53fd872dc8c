"""Mosquitto locked down: password authentication, ACLs and optional TLS.

Roles, by MQTT username:
- ``bridge_user`` may only subscribe (read ``sensors/#``, shared subscriptions included);
- ``fleet_user`` (the simulator, one connection for many devices) may only publish under ``sensors/``;
- any other user is a device, and may only publish to its own topic ``sensors/<site>/<username>``.
Passwords come from the environment or secret files at start and are written hashed
(``mosquitto_passwd``) into the broker's state directory, never into the repository.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"


@dataclass(frozen=True)
class MqttTls:
    cafile: Path
    certfile: Path
    keyfile: Path


@dataclass(frozen=True)
class MqttSecurity:
    users: dict[str, str]  # username -> password
    bridge_user: str = "tsdemo-bridge"
    fleet_user: str = "tsdemo-fleet"
    tls: MqttTls | None = None
    extra_acl: list[str] = field(default_factory=list)

    def acl(self) -> str:
        return "\n".join([
            "# written by deploy.local.mqtt_security; the bridge reads, the fleet writes, devices write their own",
            f"user {self.bridge_user}",
            "topic read sensors/#",
            "",
            f"user {self.fleet_user}",
            "topic write sensors/#",
            "",
            "# every other user is a device: only its own topic (username = device_id)",
            "pattern write sensors/+/%u",
            *self.extra_acl,
            "",
        ])

    def config(self, state_dir: Path) -> str:
        """The listener's security lines; writes the password and ACL files into ``state_dir``."""
        passwd, acl = state_dir / "passwd", state_dir / "acl"
        passwd.unlink(missing_ok=True)
        passwd.touch(mode=0o600)
        for user, password in self.users.items():
            subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwd), user, password], check=True,
                           capture_output=True)
        acl.write_text(self.acl())
        lines = ["allow_anonymous false", f"password_file {passwd}", f"acl_file {acl}"]
        if self.tls is not None:
            lines += [f"cafile {self.tls.cafile}", f"certfile {self.tls.certfile}", f"keyfile {self.tls.keyfile}"]
        return "\n".join(lines)
