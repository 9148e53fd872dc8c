"""Settings of ``tsdemo dashboards provision``: which Grafana, how to log in, and where Grafana finds InfluxDB.

The InfluxDB fields read the same ``TSDEMO_INFLUX_*`` variables as every other service and as the
datasource provisioning file, so one set of variables describes the stack; here they mean InfluxDB
*as Grafana reaches it* (in a container network that is often not the address this shell uses).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from servicekit.contract.influx import INFLUX_DATABASE
from servicekit.settings import ServiceSettings

# The generated provisioning tree, committed; compose and Kubernetes mount exactly this folder.
COMMITTED = Path(__file__).resolve().parent / "provisioning"


def _http_url(value: str, what: str) -> str:
    value = value.strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must look like http://host:port or https://host/prefix")
    try:
        _ = parts.port  # urlsplit only checks the port when asked
    except ValueError:
        raise ValueError(f"{what} has an invalid port") from None
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{what} must not carry a query string, fragment or credentials")
    return value.rstrip("/")


class GrafanaSettings(ServiceSettings):
    grafana_url: str = Field("http://127.0.0.1:3000", description="Grafana base URL, http(s)://host:port[/prefix]")
    grafana_user: str = Field("admin", description="Grafana user for basic auth (not used with --grafana-token)")
    grafana_password: SecretStr = Field(SecretStr("admin"), description="password of --grafana-user (Grafana's "
                                        "own first-start default; set yours)")
    grafana_password_file: Path | None = Field(None, description="file holding --grafana-password (a mounted secret)")
    grafana_token: SecretStr | None = Field(
        None, description="service account token (sent as 'Authorization: Bearer'), instead of user and password"
    )
    grafana_token_file: Path | None = Field(None, description="file holding --grafana-token (a mounted secret)")
    grafana_wait_s: float = Field(60.0, ge=0, description="seconds to wait for Grafana's /api/health to answer ok")
    grafana_timeout_s: float = Field(10.0, gt=0, description="seconds to wait for one HTTP request to Grafana")
    influx_url: str = Field(
        "http://127.0.0.1:8086", description="InfluxDB base URL as Grafana reaches it (the datasource's URL)"
    )
    influx_database: str = Field(INFLUX_DATABASE, min_length=1, description="InfluxDB database of the datasource")
    influx_username: str | None = Field(None, description="InfluxDB user for the datasource (InfluxDB auth on)")
    influx_password: SecretStr | None = Field(None, description="password of --influx-username")
    influx_password_file: Path | None = Field(None, description="file holding --influx-password")

    secret_files = (
        ("grafana_password", "grafana_password_file", "Grafana password"),
        ("grafana_token", "grafana_token_file", "Grafana token"),
        ("influx_password", "influx_password_file", "InfluxDB password"),
    )

    @field_validator("grafana_url")
    @classmethod
    def _grafana_url(cls, value: str) -> str:
        return _http_url(value, "grafana_url")

    @field_validator("influx_url")
    @classmethod
    def _influx_url(cls, value: str) -> str:
        return _http_url(value, "influx_url")

    @model_validator(mode="after")
    def _influx_auth(self) -> GrafanaSettings:
        if self.influx_password is not None and not self.influx_username:
            raise ValueError("influx_password is set but influx_username is not")
        return self

    def credential(self) -> str | tuple[str, str]:
        """What grafana-client takes: a token, or (user, password) for basic auth."""
        if self.grafana_token is not None:
            return self.grafana_token.get_secret_value()
        return (self.grafana_user, self.grafana_password.get_secret_value())
