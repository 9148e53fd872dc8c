"""Settings for talking to InfluxDB (``TSDEMO_INFLUX_*``) and the retention of each storage tier.

Credentials can come from files (``--influx-password-file``, ``--influx-token-file``) so that
container secrets never have to sit in an environment variable; the file is read once, here.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from servicekit.contract.influx import INFLUX_DATABASE
from servicekit.settings import ServiceSettings

_DURATION_PART = re.compile(r"(\d+)(ns|us|u|µ|ms|s|m|h|d|w)")
_UNIT_S = {
    "ns": 1e-9, "us": 1e-6, "u": 1e-6, "µ": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400,
    "w": 604800,
}  # fmt: skip


def parse_duration_s(text: str) -> float:
    """Seconds in an InfluxQL duration (``7d``, ``168h0m0s``); ``INF`` and ``0s`` mean forever (0)."""
    text = text.strip()
    if text.upper() == "INF":
        return 0.0
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not an InfluxQL duration such as 7d, 12h, 90d or INF")
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


def _retention(value: str) -> str:
    value = value.strip()
    seconds = parse_duration_s(value)
    # InfluxDB refuses retention policies shorter than an hour; say so before it does.
    if 0 < seconds < 3600:
        raise ValueError(
            f"retention {value!r} is shorter than InfluxDB's minimum of 1h (use INF to keep forever)"
        )
    return "INF" if seconds == 0 else value


class InfluxSettings(ServiceSettings):
    influx_url: str = Field(
        "http://127.0.0.1:8086", description="InfluxDB base URL, http(s)://host:port[/path-prefix]"
    )
    influx_database: str = Field(INFLUX_DATABASE, min_length=1, description="InfluxDB database")
    influx_username: str | None = Field(None, description="user for basic auth (InfluxDB 1.x with auth on)")
    influx_password: SecretStr | None = Field(None, description="password for --influx-username")
    influx_password_file: Path | None = Field(
        None, description="file holding the password, read at start (--influx-password wins)"
    )
    influx_token: SecretStr | None = Field(
        None,
        description="API token for InfluxDB 2.x/3.x v1 compatibility API (sent as 'Authorization: Token')",
    )
    influx_token_file: Path | None = Field(
        None, description="file holding the API token, read at start (--influx-token wins)"
    )
    influx_batch_size: int = Field(5000, ge=1, le=100_000, description="lines per write request")
    influx_timeout_s: float = Field(10.0, gt=0, description="seconds to wait for one HTTP request")
    influx_retry_max_s: float = Field(
        60.0, ge=0, description="total seconds a write keeps retrying on 5xx/connection errors before failing"
    )
    raw_retention: str = Field("7d", description="retention of the raw 10 s windows (retention policy 'raw')")
    rollup_1m_retention: str = Field("90d", description="retention of the 1-minute rollups ('rollup_1m')")
    rollup_1h_retention: str = Field(
        "1095d", description="retention of the 1-hour rollups ('rollup_1h'; INF: forever)"
    )

    secret_files = (
        ("influx_password", "influx_password_file", "password"),
        ("influx_token", "influx_token_file", "token"),
    )

    @field_validator("influx_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip()
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("influx_url must look like http://host:8086 or https://host/prefix")
        try:
            _ = parts.port  # urlsplit only checks the port when asked
        except ValueError:
            raise ValueError("influx_url has an invalid port") from None
        if parts.query or parts.fragment:
            raise ValueError("influx_url must not carry a query string or fragment")
        if parts.username or parts.password:
            raise ValueError("influx_url must not embed credentials; use --influx-username/--influx-token")
        return value.rstrip("/")

    @field_validator("raw_retention", "rollup_1m_retention", "rollup_1h_retention")
    @classmethod
    def _durations(cls, value: str) -> str:
        return _retention(value)

    @model_validator(mode="after")
    def _auth(self) -> InfluxSettings:
        if self.influx_password is not None and not self.influx_username:
            raise ValueError("influx_password is set but influx_username is not")
        if self.influx_token is not None and self.influx_username:
            raise ValueError("set either influx_token (2.x/3.x) or influx_username/password (1.x), not both")
        return self

    def auth_headers(self) -> dict[str, str]:
        """HTTP headers that authenticate every request; empty when InfluxDB has auth off."""
        if self.influx_token is not None:
            return {"Authorization": f"Token {self.influx_token.get_secret_value()}"}
        if self.influx_username:
            import urllib3

            password = self.influx_password.get_secret_value() if self.influx_password else ""
            return {
                "Authorization": urllib3.make_headers(basic_auth=f"{self.influx_username}:{password}")[
                    "authorization"
                ]
            }
        return {}
