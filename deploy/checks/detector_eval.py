"""Offline evaluation of the anomaly detectors: the real generator's readings and labels, no servers.

``tsdemo anomalies evaluate`` renders a seeded fleet with
``generators.render.render_messages`` -- the exact messages, faults and ground-truth labels a
``tsdemo generate`` run would publish, on a synthetic clock -- and replays what the Spark job's anomaly
query would see:

- readings the generator judged late (behind the watermark) are dropped, as the watermark drops them;
- a reading sent twice is kept once, on (device_id, boot, seq);
- arrivals are cut into micro-batches of the job's `--trigger`, and within a batch each
  (device, metric) series is sorted by (event time, seq), as ``processing.stateful`` sorts it;
  the order across batches is arrival order, so out-of-order and backlogged readings stay out of order;
- every value goes through ``processing.anomaly.observe`` with state kept per (device, metric).

The detections are scored with ``deploy.checks.scoring.score``: per detector and per anomaly kind, and
every false positive is given the likeliest cause from what the series was doing (see ``CAUSES``).
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, create_model

from deploy.checks.scoring import Score, percent, score
from generators.settings import GeneratorSettings
from processing.anomaly import DetectorConfig, SeriesState, observe
from processing.settings import ProcessingSettings, duration_ms
from servicekit.contract.labels import UNSEEABLE_KINDS
from servicekit.settings import PrintsResults

#: Why a detection on an unlabelled reading fired, in the order they are tried (the first that fits). The
#: detector's memory: the series' last max(warmup, 2 / alpha) readings (40 by default). A skewed clock is
#: not a cause of its own: a constant offset changes neither the order nor the values of a series.
CAUSES = {
    "at_limit": "the value, or one of the 5 before, sits at the metric's physical limit (clamped signal)",
    "out_of_order": "the reading arrived after a newer one of its series (a later micro-batch)",
    "after_reboot": "within the detector's memory after the device rebooted (boot + 1)",
    "after_spike": "within the detector's memory after a labelled spike on the series",
    "after_stuck_at": "within the detector's memory after a labelled frozen stretch",
    "after_drift": "within the detector's memory after a labelled drift (the recovery)",
    "after_dropout": "within the detector's memory after readings that were never sent",
    "repeated_value": "a healthy signal repeated a rounded value",
    "clean_signal": "none of the above: a healthy stretch of signal",
}

#: Generator settings the evaluation takes over as its own flags (same names, checks and help).
GENERATOR_FIELDS = (
    "devices", "sites", "seed", "rate", "batch", "anomaly_rate", "duplicate_rate", "out_of_order_rate",
    "out_of_order_delay_s", "late_rate", "late_delay_s", "clock_skew_rate", "clock_skew_max_s", "offline_rate",
    "offline_duration_s", "reboot_rate",
)
#: Processing settings likewise: the detectors' and the anomaly query's.
PROCESSING_FIELDS = ("anomaly_z", "anomaly_warmup", "anomaly_stuck_run", "anomaly_drift", "watermark",
                     "trigger")


def _fields(model: Any, names: Iterable[str], **defaults: Any) -> dict[str, Any]:
    out = {}
    for name in names:
        info = model.model_fields[name]
        if name in defaults:
            info = type(info).merge_field_infos(info, default=defaults[name])
        out[name] = (info.annotation, info)
    return out


def settings_model() -> type[PrintsResults]:
    return create_model(  # type: ignore[call-overload,no-any-return]
        "EvaluateSettings",
        __base__=PrintsResults,
        __doc__="Settings of ``tsdemo anomalies evaluate``.",
        count=(int, Field(4000, ge=1, description="readings to generate (the whole fleet's)")),
        start_ms=(int, Field(1_700_000_000_000, description="event time of the first reading (epoch ms): "
                             "where in the daily cycle the run starts")),
        examples=(int, Field(0, ge=0, description="print this many false positives and missed episodes with "
                                              "the values around them")),
        # The e2e scoring run's fleet (tests/e2e/test_processing.py) with 1 % anomalies.
        **_fields(GeneratorSettings, GENERATOR_FIELDS, devices=6, sites=2, rate=500.0, seed=11, anomaly_rate=0.01),
        **_fields(ProcessingSettings, PROCESSING_FIELDS),
    )


@dataclass(frozen=True, slots=True)
class Fed:
    """One value as the detector saw it."""

    device_id: str
    type: str
    metric: str
    boot: int
    seq: int
    ts: int
    value: float
    batch: int

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.device_id, self.metric, self.boot, self.seq)


@dataclass(frozen=True, slots=True)
class Detection:
    fed: Fed
    detector: str
    score: float
    #: position of the value in its series' feed order
    index: int
    #: None when the detection is on a labelled reading, else a key of CAUSES
    cause: str | None


@dataclass
class Evaluation:
    labels: list[dict[str, Any]]
    detections: list[Detection]
    #: per (device_id, metric): the values in the order the detector saw them
    series: dict[tuple[str, str], list[Fed]] = field(default_factory=dict)
    readings: int = 0

    def score(self, detector: str | None = None) -> Score:
        return score(self.labels, [d.fed.key for d in self.detections if detector in (None, d.detector)])


class _Labels:
    """Collects the labels a render writes (the ``LabelWriter`` interface the accountant uses)."""

    def __init__(self) -> None:
        self.labels: list[dict[str, Any]] = []

    def write(self, labels: list[dict[str, Any]]) -> None:
        self.labels.extend(labels)


def arrivals(settings: Any) -> tuple[list[tuple[float, dict[str, Any]]], list[dict[str, Any]]]:
    """(arrival time in s, reading) of every reading the anomaly query gets, in arrival order, and the labels."""
    from generators.render import render_messages
    from generators.settings import GeneratorSettings

    gen = GeneratorSettings(**{k: getattr(settings, k) for k in GENERATOR_FIELDS}, ledger_path=None,
                            late_threshold_s=duration_ms(settings.watermark) / 1000)
    labels = _Labels()
    out: list[tuple[float, dict[str, Any]]] = []
    seen: set[tuple[str, int, int]] = set()
    sent = 0
    for message in render_messages(gen, settings.count, settings.start_ms, labels=labels):  # type: ignore[arg-type]
        for item in message.items:
            if item.reading is None:
                continue
            sent += 1  # one reading generated per 1/rate s, so the sent count is the synthetic clock
            r = item.reading
            key = (r["device_id"], r["boot"], r["seq"])
            if item.late or key in seen:
                continue
            seen.add(key)
            out.append((sent / gen.rate, r))
    return out, labels.labels


def feed(readings: list[tuple[float, dict[str, Any]]], cfg: DetectorConfig,
         trigger_s: float) -> tuple[dict[tuple[str, str], list[Fed]], list[tuple[Fed, str, float, int]]]:
    """Runs the detectors over the readings as the anomaly query would: per micro-batch of ``trigger_s``
    and series, sorted by (event time, seq); returns each series' feed order and (value, detector,
    score, index in the series) for every detection."""
    batches: dict[int, dict[tuple[str, str], list[Fed]]] = defaultdict(lambda: defaultdict(list))
    for at, r in readings:
        batch = int(at // trigger_s)
        for metric, value in r["metrics"].items():
            batches[batch][(r["device_id"], metric)].append(
                Fed(r["device_id"], r["type"], metric, r["boot"], r["seq"], r["ts"], float(value), batch))
    states: dict[tuple[str, str], SeriesState] = defaultdict(SeriesState)
    series: dict[tuple[str, str], list[Fed]] = defaultdict(list)
    fired: list[tuple[Fed, str, float, int]] = []
    for batch in sorted(batches):
        for key, values in batches[batch].items():
            state, history = states[key], series[key]
            for fed in sorted(values, key=lambda f: (f.ts, f.seq)):
                history.append(fed)
                fired.extend((fed, d, s, len(history) - 1) for d, s in observe(state, fed.value, cfg))
    return dict(series), fired


def _episode_ends(labels: list[dict[str, Any]]) -> dict[tuple[str, str, int], list[tuple[int, str]]]:
    """Per (device_id, metric, boot): (last seq, kind) of every labelled episode."""
    last: dict[tuple[str, str, int, int], tuple[int, str]] = {}
    for label in labels:
        k = (label["device_id"], label["metric"], int(label["boot"]), int(label["episode"]))
        if k not in last or int(label["seq"]) > last[k][0]:
            last[k] = (int(label["seq"]), label["kind"])
    ends: dict[tuple[str, str, int], list[tuple[int, str]]] = defaultdict(list)
    for (device, metric, boot, _), end in last.items():
        ends[(device, metric, boot)].append(end)
    return ends


def cause_of(history: list[Fed], index: int, detector: str, memory: int,
             ends: dict[tuple[str, str, int], list[tuple[int, str]]]) -> str:
    """The likeliest reason a detection on an unlabelled reading fired (a key of CAUSES)."""
    from generators.devicetypes import DEVICE_TYPES

    fed = history[index]
    recent = history[max(0, index - memory):index]
    spec = DEVICE_TYPES[fed.type].spec(fed.metric)
    if fed.value in (spec.low, spec.high) or any(h.value in (spec.low, spec.high) for h in recent[-5:]):
        return "at_limit"
    if any(h.ts > fed.ts for h in history[:index]):
        return "out_of_order"
    if any(h.boot != fed.boot for h in recent):
        return "after_reboot"
    before = [(fed.seq - end, kind) for end, kind in ends.get((fed.device_id, fed.metric, fed.boot), ())
              if 0 < fed.seq - end <= memory]
    if before:
        return "after_" + min(before)[1]
    if detector == "stuck":
        return "repeated_value"
    return "clean_signal"


def evaluate(settings: Any) -> Evaluation:
    cfg = DetectorConfig.from_settings(settings)
    readings, labels = arrivals(settings)
    series, fired = feed(readings, cfg, duration_ms(settings.trigger) / 1000)
    labelled = {(x["device_id"], x["metric"], int(x["boot"]), int(x["seq"])) for x in labels}
    ends = _episode_ends(labels)
    memory = max(cfg.warmup, round(2 / cfg.alpha))
    detections = [
        Detection(fed, detector, s, i, None if fed.key in labelled else
                  cause_of(series[(fed.device_id, fed.metric)], i, detector, memory, ends))
        for fed, detector, s, i in fired
    ]
    return Evaluation(labels, detections, series, len(readings))


def report(ev: Evaluation) -> dict[str, Any]:
    """``deploy.checks.scoring``'s scores, plus per detector its precision and the episodes of each kind it
    found, per kind the detections on its readings, and the false positives by cause and by detector,
    device type, metric and cause."""
    per_detector = {}
    for detector in sorted({d.detector for d in ev.detections}):
        s = ev.score(detector).as_dict()
        per_detector[detector] = {"precision": s["precision"], "detections": s["detections"],
                                  "found": {k: v["found"] for k, v in s["per_kind"].items()}}
    kind_of = {(x["device_id"], x["metric"], int(x["boot"]), int(x["seq"])): x["kind"] for x in ev.labels}
    on_kind = Counter(kind_of[d.fed.key] for d in ev.detections if d.cause is None)
    out = ev.score().as_dict()
    for kind, k in out["per_kind"].items():
        k["detections"] = on_kind.get(kind, 0)
    false = [d for d in ev.detections if d.cause is not None]
    by = Counter((d.detector, d.fed.type, d.fed.metric, d.cause) for d in false)
    return {
        "readings": ev.readings, **out, "per_detector": per_detector,
        "false_positives": {
            "by_cause": dict(Counter(d.cause for d in false).most_common()),
            "by_detector_type_metric_cause": [
                {"detector": k[0], "type": k[1], "metric": k[2], "cause": k[3], "count": n} for k, n in by.most_common()
            ],
        },
    }


def print_report(r: dict[str, Any], out: Any = sys.stdout) -> None:
    def say(line: str) -> None:
        print(line, file=out)

    say(f"{r['readings']} readings fed; precision {percent(r['precision'])} ({r['true_detections']} of "
        f"{r['detections']} detections on labelled readings), recall {percent(r['recall'])} of episodes")
    detectors = list(r["per_detector"])
    say(f"  {'kind':<9} {'found':>11} {'recall':>7} {'detections':>11}  " + " ".join(f"{d:>7}" for d in detectors))
    for kind, k in r["per_kind"].items():
        say(f"  {kind:<9} {k['found']:>4} of {k['episodes']:<4} {percent(k['recall']):>7} {k['detections']:>11}  "
            + " ".join(f"{r['per_detector'][d]['found'].get(kind, 0):>7}" for d in detectors))
    for detector, v in r["per_detector"].items():
        say(f"  {detector:<9} precision {percent(v['precision'])} of {v['detections']} detections")
    fp = r["false_positives"]
    if fp["by_cause"]:
        say("false positives by cause:")
        for cause, n in fp["by_cause"].items():
            say(f"  {n:>5}  {cause:<15} {CAUSES[cause]}")
        say("by detector, type, metric and cause:")
        for row in fp["by_detector_type_metric_cause"]:
            say(f"  {row['count']:>5}  {row['detector']:<7} {row['type']:<12} {row['metric']:<12} {row['cause']}")


def _values(history: list[Fed], lo: int, hi: int, mark: set[int]) -> str:
    return " ".join(f"[{f.value:g}]" if i in mark else f"{f.value:g}"
                    for i, f in enumerate(history[max(0, lo):hi], start=max(0, lo)))


#: ``tsdemo anomalies evaluate``'s settings: its own, and the generator's and processing's it takes over.
EvaluateSettings = settings_model()


def print_examples(ev: Evaluation, n: int, out: Any = sys.stdout) -> None:
    """The first ``n`` false positives and missed episodes, with the values around them in feed order."""
    for d in [d for d in ev.detections if d.cause is not None][:n]:
        history = ev.series[(d.fed.device_id, d.fed.metric)]
        print(f"false {d.detector} {d.fed.device_id} {d.fed.metric} boot {d.fed.boot} seq {d.fed.seq} score "
              f"{d.score:.1f} ({d.cause}): {_values(history, d.index - 8, d.index + 4, {d.index})}", file=out)
    found = {d.fed.key for d in ev.detections}
    episodes: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for x in ev.labels:
        if x["kind"] not in UNSEEABLE_KINDS:
            episodes[(x["device_id"], x["metric"], int(x["episode"]))].append(x)
    missed = [e for e in episodes.values()
              if not any((x["device_id"], x["metric"], int(x["boot"]), int(x["seq"])) in found for x in e)]
    for e in missed[:n]:
        history = ev.series.get((e[0]["device_id"], e[0]["metric"]), [])
        keys = {(x["boot"], x["seq"]) for x in e}
        mark = {i for i, f in enumerate(history) if (f.boot, f.seq) in keys}
        where = _values(history, min(mark) - 8, max(mark) + 4, mark) if mark else "(never fed)"
        print(f"missed {e[0]['kind']} {e[0]['device_id']} {e[0]['metric']} boot {e[0]['boot']} seq {e[0]['seq']} "
              f"({len(e)} readings; normal {e[0]['normal']:g}): {where}", file=out)

