"""The HTTP plumbing shared by the writer and the query client: one urllib3 pool, the auth header,
timeouts, and turning an InfluxDB error response into the message the server gave.

Only the v1 HTTP API is used (``/write``, ``/query``, ``/ping``) because InfluxDB 1.x, 2.x (v1
compatibility API, token auth) and 3.x all speak it.
"""

from __future__ import annotations

import json
from typing import Any, Self
from urllib.parse import urlencode

import urllib3

from storage.settings import InfluxSettings


def server_message(response: urllib3.BaseHTTPResponse) -> str:
    """The error text InfluxDB put in a response: the JSON ``error``/``message``, else the body."""
    raw = response.data or b""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("error", "message"):
            if isinstance(body.get(key), str) and body[key]:
                return body[key]
    header = response.headers.get("X-Influxdb-Error")
    return text[:2000] or header or response.reason or f"HTTP {response.status}"


class InfluxHTTP:
    """A thin client for the v1 HTTP API; it never retries by itself (callers decide)."""

    def __init__(self, settings: InfluxSettings, pool: urllib3.PoolManager | None = None) -> None:
        self.settings = settings
        self.base_url = settings.influx_url
        self._headers = {"User-Agent": "tsdemo-storage", **settings.auth_headers()}
        self._timeout = urllib3.Timeout(
            connect=min(5.0, settings.influx_timeout_s), read=settings.influx_timeout_s
        )
        self.pool = pool or urllib3.PoolManager(num_pools=2, maxsize=4)

    def url(self, path: str, params: dict[str, Any] | None = None) -> str:
        given = {k: v for k, v in (params or {}).items() if v is not None and v != ""}
        return f"{self.base_url}{path}" + (f"?{urlencode(given)}" if given else "")

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """One request; raises ``urllib3.exceptions.HTTPError`` when the server cannot be reached."""
        return self.pool.request(
            method,
            self.url(path, params),
            body=body,
            headers={**self._headers, **(headers or {})},
            timeout=self._timeout if timeout is None else urllib3.Timeout(timeout),
            retries=False,
            redirect=False,
        )

    def ping(self, timeout: float = 2.0) -> bool:
        """True when the server answers ``/ping`` with 204 (1.x, 2.x and 3.x all do)."""
        try:
            return self.request("GET", "/ping", timeout=timeout).status == 204
        except urllib3.exceptions.HTTPError:
            return False

    def close(self) -> None:
        self.pool.clear()


class InfluxClient:
    """What the writer and the query client have alike: their settings and one ``InfluxHTTP``, closed
    with them (they are context managers)."""

    def __init__(self, settings: InfluxSettings, pool: urllib3.PoolManager | None = None) -> None:
        self.settings = settings
        self.http = InfluxHTTP(settings, pool)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
