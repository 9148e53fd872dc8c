"""``tsdemo verify``: what the generators published (their ledgers) against what InfluxDB holds.

Per device and metric: expected readings (acknowledged by the broker) against the summed ``count``
of the stored device windows. While a generator still runs, only event-time minutes older than a
settling delay are compared, so a healthy live pipeline reports zero too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from servicekit.contract.ledger import BUCKET_MS, LedgerEntry, load_ledger
from servicekit.settings import PrintsResults, add_service_command
from storage.queries import InfluxQuery
from storage.settings import InfluxSettings


class VerifySettings(InfluxSettings, PrintsResults):
    ledger_path: list[Path] = Field(
        [Path(".tsdemo/ledger/generator.json")],
        description="generator ledger file(s); give the flag once per file",
    )
    wait_s: float = Field(0.0, ge=0, description="keep checking up to this long until nothing is missing")
    settle_s: float = Field(90.0, ge=0, description="for a live generator: compare only readings older "
                            "than this (covers watermark, trigger and write delay)")


@dataclass
class Result:
    expected: int = 0
    stored: int = 0
    lost: int = 0
    double_counted: int = 0
    late_sent: int = 0
    late_stored: int = 0
    until_ms: int | None = None
    problems: list[dict] = field(default_factory=list)
    unknown_series: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.double_counted == 0


def _per_series(entries: list[LedgerEntry], until_ms: int | None) -> dict[tuple[str, str], int]:
    totals: dict[tuple[str, str], int] = {}
    for e in entries:
        key = (e.device_id, e.metric)
        totals[key] = totals.get(key, 0) + e.count(until_ms)
    return totals


def compare(entries: list[LedgerEntry], stored: dict[tuple[str, str], int], until_ms: int | None,
            late: list[LedgerEntry] | None = None) -> Result:
    """Lost and double-counted readings per (device, metric); pure, so it is unit-tested alone.

    Readings the generator sent behind the watermark (the ledger's late section) may or may not be
    stored, so per series ``expected <= stored <= expected + late`` is exact; outside it, the
    shortfall is lost and the excess double-counted.
    """
    result = Result(until_ms=until_ms)
    expected = _per_series(entries, until_ms)
    late_counts = _per_series(late or [], until_ms)
    for key in sorted(set(expected) | set(late_counts)):
        want, maybe = expected.get(key, 0), late_counts.get(key, 0)
        got = stored.get(key, 0)
        result.expected += want
        result.stored += got
        result.late_sent += maybe
        result.late_stored += min(max(0, got - want), maybe)
        if got < want:
            result.lost += want - got
        elif got > want + maybe:
            result.double_counted += got - want - maybe
        if got < want or got > want + maybe:
            result.problems.append({"device_id": key[0], "metric": key[1], "expected": want, "stored": got,
                                    "late": maybe})
    known = set(expected) | set(late_counts)
    result.unknown_series = sorted(f"{d}/{m}" for d, m in stored if (d, m) not in known)
    return result


def _cutoff(headers: list[dict], settle_s: float) -> int | None:
    """None when every generator finished (compare everything), else a settled minute boundary.

    Never before a ledger's ``merged_before_ms``: older minutes are merged there, and a cutoff
    inside them could not be counted exactly.
    """
    if all(h.get("complete") for h in headers):
        return None
    newest_safe = min(int(h["updated_ms"]) for h in headers) - int(settle_s * 1000)
    cutoff = newest_safe - newest_safe % BUCKET_MS
    return max([cutoff] + [int(h.get("merged_before_ms", 0)) for h in headers])


def check(settings: VerifySettings) -> Result:
    headers, entries, late = [], [], []
    for path in settings.ledger_path:
        ledger = load_ledger(path)
        headers.append(ledger.header)
        entries.extend(ledger.entries)
        late.extend(ledger.late)
    until = _cutoff(headers, settings.settle_s)
    query = InfluxQuery(settings)
    result = compare(entries, query.stored_counts(until_ms=until), until, late)
    merged_before = max(int(h.get("merged_before_ms", 0)) for h in headers)
    for problem in result.problems[:MINUTES_FOR]:
        problem["minutes"] = _differing_minutes(problem, entries, late, query, until, merged_before)
    return result


#: how many problem series get a minute-by-minute breakdown (a query each)
MINUTES_FOR = 20


def _differing_minutes(problem: dict, entries: list[LedgerEntry], late: list[LedgerEntry],
                       query: InfluxQuery, until_ms: int | None, merged_before_ms: int) -> list[dict]:
    """The event-time minutes where one problem series' stored count is outside what was sent:
    where in the run the readings went missing (or doubled), to line up with logs and faults.

    Minutes the ledger merged (before ``merged_before_ms``) are compared as the one bucket it keeps.
    """
    key = (problem["device_id"], problem["metric"])
    sent = minute_counts([e for e in entries if (e.device_id, e.metric) == key], until_ms)
    maybe = minute_counts([e for e in late if (e.device_id, e.metric) == key], until_ms)
    if not sent and not maybe:
        return []
    since = min(sent | maybe)
    since = 0 if since < merged_before_ms else since  # the merged bucket reaches back to the start
    stored: dict[int, int] = {}
    for m, n in query.stored_counts_by_minute(key[0], key[1], since, until_ms).items():
        m = merged_before_ms - BUCKET_MS if m < merged_before_ms else m
        stored[m] = stored.get(m, 0) + n
    return [{"minute_ms": m, "expected": sent.get(m, 0), "stored": stored.get(m, 0), "late": maybe.get(m, 0)}
            for m in sorted(set(sent) | set(maybe) | set(stored))
            if not sent.get(m, 0) <= stored.get(m, 0) <= sent.get(m, 0) + maybe.get(m, 0)]


def minute_counts(entries: list[LedgerEntry], until_ms: int | None) -> dict[int, int]:
    counts: dict[int, int] = {}
    for e in entries:
        for bucket, n in e.buckets.items():
            if until_ms is None or bucket + BUCKET_MS <= until_ms:
                counts[bucket] = counts.get(bucket, 0) + n
    return counts


def _print(result: Result, as_json: bool) -> None:
    if as_json:
        print(json.dumps({**result.__dict__, "ok": result.ok}, indent=2))
        return
    if result.until_ms is None:
        scope = "all readings"
    else:
        scope = "readings before " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(result.until_ms / 1000))
    print(f"verify ({scope}): expected {result.expected}, stored {result.stored}, "
          f"lost {result.lost}, double-counted {result.double_counted}")
    if result.late_sent:
        print(f"  late: {result.late_sent} sent behind the watermark, {result.late_stored} of them stored, "
              f"the rest dropped as late (counted in the pipeline measurement)")
    for p in result.problems[:MINUTES_FOR]:
        print(f"  {p['device_id']} {p['metric']}: expected {p['expected']}, stored {p['stored']}")
        for m in p.get("minutes", [])[:5]:
            minute = time.strftime("%H:%M", time.gmtime(m["minute_ms"] / 1000))
            print(f"    minute {minute} UTC: expected {m['expected']}, stored {m['stored']}")
    if len(result.problems) > MINUTES_FOR:
        print(f"  ... and {len(result.problems) - MINUTES_FOR} more series")
    if result.unknown_series:
        print(f"  note: {len(result.unknown_series)} stored series are not in any ledger "
              f"(e.g. {result.unknown_series[0]}); they are not counted")


def _run(settings: VerifySettings) -> int:
    deadline = time.monotonic() + settings.wait_s
    try:
        while True:
            result = check(settings)
            if result.ok or time.monotonic() >= deadline:
                break
            print(f"waiting: lost {result.lost}, double-counted {result.double_counted} ...", file=sys.stderr)
            time.sleep(2.0)
    except (FileNotFoundError, ValueError) as exc:
        print(f"tsdemo verify: {exc}", file=sys.stderr)
        return 2
    _print(result, settings.json_output)
    return 0 if result.ok else 1


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    add_service_command(
        subparsers,
        "verify",
        "compare the generator's ledger with InfluxDB: lost and double-counted readings",
        VerifySettings,
        _run,
        description=(
            "Compare, per device and metric, the readings the generator published (its ledger) with the\n"
            "summed counts of the stored device windows. Exits 1 if any reading is lost or counted twice."
        ),
    )
