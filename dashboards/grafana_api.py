"""``tsdemo dashboards provision``: create or update the datasource, folder, dashboards and alert rules
in a running Grafana through its HTTP API, with grafana-client.

Idempotent: each object is read first and written only when missing or different, so a second run
changes nothing. Objects Grafana got from the provisioning files (the same code generated them) are
left alone: Grafana refuses API changes to them, and the files are their source. It waits for
``/api/health`` first, checks the credentials once, and turns the ways this goes wrong (unreachable,
bad credentials, refused requests) into a ``ProvisionError`` whose message says what to check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import niquests
from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from dashboards import datasource, provisioning
from dashboards.conventions import FOLDER_TITLE, FOLDER_UID
from dashboards.settings import GrafanaSettings

Say = Callable[[str], None]
# Grafana's answers to any of these mean it is not (yet) able to serve: keep waiting.
_UNREACHABLE = (niquests.exceptions.RequestException, GrafanaException)


class ProvisionError(RuntimeError):
    """Provisioning could not finish; the message says why and what to check."""


def connect(settings: GrafanaSettings) -> GrafanaApi:
    url = settings.grafana_url
    # grafana-client appends "api" to the URL's path as it is: a prefix must end with "/".
    if url.count("/") > 2:
        url += "/"
    return GrafanaApi.from_url(url, credential=settings.credential(), timeout=settings.grafana_timeout_s)


def wait_healthy(api: GrafanaApi, settings: GrafanaSettings, say: Say) -> dict[str, Any]:
    """``/api/health`` once it reports the database ok; ``ProvisionError`` after ``grafana_wait_s``."""
    deadline = time.monotonic() + settings.grafana_wait_s
    last_error = ""
    while True:
        try:
            health = api.client.GET("/health")
            if isinstance(health, dict) and health.get("database") == "ok":
                return health
            last_error = f"/api/health answered {health!r}"
        except _UNREACHABLE as exc:
            last_error = str(getattr(exc, "message", None) or exc)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProvisionError(
                f"Grafana at {settings.grafana_url} did not answer /api/health with database ok within "
                f"{settings.grafana_wait_s:g}s (last: {last_error}); is it running, and is --grafana-url "
                f"(TSDEMO_GRAFANA_URL) right?"
            )
        say(f"waiting for Grafana at {settings.grafana_url}: {last_error}")
        time.sleep(min(1.0, remaining))


def check_credentials(api: GrafanaApi, settings: GrafanaSettings) -> None:
    try:
        api.organization.get_current_organization()
    except GrafanaClientError as exc:
        how = ("--grafana-token (TSDEMO_GRAFANA_TOKEN)" if settings.grafana_token is not None
               else "--grafana-user/--grafana-password (TSDEMO_GRAFANA_USER/TSDEMO_GRAFANA_PASSWORD)")
        if exc.status_code == 401:
            raise ProvisionError(f"Grafana at {settings.grafana_url} refused the credentials (HTTP 401); "
                                 f"check {how}") from None
        if exc.status_code == 403:
            raise ProvisionError(f"Grafana at {settings.grafana_url} accepted the credentials but denies them "
                                 f"this (HTTP 403); they need the Admin role: check {how}") from None
        raise


def _get(call: Callable[[], Any]) -> Any | None:
    """The object, or None when Grafana answers 404."""
    try:
        return call()
    except GrafanaClientError as exc:
        if exc.status_code == 404:
            return None
        raise


def contains(existing: Any, desired: Any) -> bool:
    """Whether ``existing`` (what Grafana returned, with its own extra keys) holds all of ``desired``."""
    if isinstance(desired, dict):
        return isinstance(existing, dict) and all(k in existing and contains(existing[k], v)
                                                  for k, v in desired.items())
    if isinstance(desired, list):
        return (isinstance(existing, list) and len(existing) == len(desired)
                and all(contains(e, d) for e, d in zip(existing, desired, strict=True)))
    return existing == desired


def upsert_datasource(api: GrafanaApi, settings: GrafanaSettings) -> str:
    password = settings.influx_password.get_secret_value() if settings.influx_password else None
    body = datasource.api_payload(settings.influx_url, settings.influx_database, settings.influx_username, password)
    existing = _get(lambda: api.datasource.get_datasource_by_uid(datasource.UID))
    if existing is None:
        api.datasource.create_datasource(body)
        return f"created datasource {datasource.UID} -> {settings.influx_url} (database {settings.influx_database})"
    if existing.get("readOnly"):
        return f"datasource {datasource.UID} comes from provisioning files here: left to them (TSDEMO_INFLUX_*)"
    unchanged = {k: v for k, v in body.items() if k != "secureJsonData"}
    if password is None and contains(existing, unchanged):
        return f"datasource {datasource.UID} is up to date"
    api.datasource.update_datasource_by_uid(datasource.UID, body)
    return f"updated datasource {datasource.UID} -> {settings.influx_url} (database {settings.influx_database})"


def upsert_folder(api: GrafanaApi) -> tuple[str, str]:
    """The folder's uid and what was done. A folder of our title made by the provisioning files (which
    name folders by title, so it has a random uid) is used as it is rather than doubled."""
    existing = _get(lambda: api.folder.get_folder(FOLDER_UID))
    if existing is None:
        same_title = [f for f in api.folder.get_all_folders() if f.get("title") == FOLDER_TITLE]
        if same_title:
            uid = same_title[0]["uid"]
            return uid, f"folder {FOLDER_TITLE!r} exists with uid {uid} (from provisioning files?): used as it is"
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        return FOLDER_UID, f"created folder {FOLDER_UID}"
    if existing.get("title") != FOLDER_TITLE:
        api.folder.update_folder(FOLDER_UID, title=FOLDER_TITLE, overwrite=True)
        return FOLDER_UID, f"renamed folder {FOLDER_UID} to {FOLDER_TITLE!r}"
    return FOLDER_UID, f"folder {FOLDER_UID} is up to date"


def upsert_dashboard(api: GrafanaApi, model: dict[str, Any], folder_uid: str) -> str:
    uid = model["uid"]
    existing = _get(lambda: api.dashboard.get_dashboard(uid))
    if existing is not None:
        if (existing.get("meta") or {}).get("provisioned"):
            return f"dashboard {uid} comes from provisioning files here: left to them"
        stored = {k: v for k, v in (existing.get("dashboard") or {}).items() if k not in ("id", "version")}
        if stored == model and (existing.get("meta") or {}).get("folderUid") == folder_uid:
            return f"dashboard {uid} is up to date"
    api.dashboard.update_dashboard({
        "dashboard": {**model, "id": None},
        "folderUid": folder_uid,
        "overwrite": True,
        "message": "tsdemo dashboards provision",
    })
    return f"{'updated' if existing is not None else 'created'} dashboard {uid}"


def upsert_rules(api: GrafanaApi, group: dict[str, Any], folder_uid: str) -> list[str]:
    group = {**group, "folderUid": folder_uid, "rules": [{**r, "folderUID": folder_uid} for r in group["rules"]]}
    actions = []
    from_files = False
    for rule in group["rules"]:
        uid = rule["uid"]
        existing = _get(lambda uid=uid: api.alertingprovisioning.get_alertrule(uid))
        if existing is None:
            api.alertingprovisioning.create_alertrule(rule)
            actions.append(f"created alert rule {uid}")
        elif existing.get("provenance") == "file":
            from_files = True
            actions.append(f"alert rule {uid} comes from provisioning files here: left to them")
        elif contains(existing, rule):
            actions.append(f"alert rule {uid} is up to date")
        else:
            api.alertingprovisioning.update_alertrule(uid, rule)
            actions.append(f"updated alert rule {uid}")
    if from_files:
        return actions  # the group is the files' too
    existing_group = _get(lambda: api.alertingprovisioning.get_rule_group(folder_uid, group["title"]))
    if existing_group is None or existing_group.get("interval") != group["interval"]:
        api.alertingprovisioning.update_rule_group(folder_uid, group["title"], group)
        actions.append(f"set rule group {group['title']} to evaluate every {group['interval']}s")
    return actions


def provision(settings: GrafanaSettings, say: Say = print) -> list[str]:
    """Everything, in dependency order: datasource, folder, dashboards, alert rules. Says and returns
    what it did."""
    dashboards = provisioning.dashboards()
    group = provisioning.rule_group()
    actions: list[str] = []

    def done(*lines: str) -> None:
        for line in lines:
            actions.append(line)
            say(line)

    api = connect(settings)
    try:
        health = wait_healthy(api, settings, say)
        say(f"Grafana {health.get('version', '?')} at {settings.grafana_url} is healthy")
        check_credentials(api, settings)
        done(upsert_datasource(api, settings))
        folder_uid, action = upsert_folder(api)
        done(action)
        for model in dashboards.values():
            done(upsert_dashboard(api, model, folder_uid))
        done(*upsert_rules(api, group, folder_uid))
    except GrafanaException as exc:
        raise ProvisionError(f"Grafana at {settings.grafana_url} answered HTTP {exc.status_code}: "
                             f"{exc.message}") from None
    except niquests.exceptions.RequestException as exc:
        raise ProvisionError(f"lost Grafana at {settings.grafana_url}: {exc}") from None
    finally:
        api.client.s.close()
    return actions
