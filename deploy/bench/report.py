"""What a bench measured and how it is reported: runs, comparisons against a baseline of the same run,
``results.json`` and the printed tables (rendered from the JSON, so a saved run prints the same).

``python -m deploy.bench.report RESULTS.json`` prints the tables of a saved run (for the README).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from deploy.bench.resources import Usage
from deploy.bench.stats import median, rate, ratio


@dataclass
class Run:
    """One tool moving ``readings`` in ``messages`` over ``seconds``; ``readings_per_s`` overrides
    ``readings / seconds`` when the figure is measured another way (Spark's processing rate)."""

    tool: str
    readings: int
    messages: int
    seconds: float
    processes: dict[str, Usage] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    readings_per_s: float | None = None

    @property
    def rate(self) -> float:
        return self.readings_per_s if self.readings_per_s is not None else rate(self.readings, self.seconds)

    @property
    def messages_per_s(self) -> float:
        return self.rate * self.messages / self.readings if self.readings else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool, "readings": self.readings, "messages": self.messages,
            "seconds": round(self.seconds, 3), "readings_per_s": round(self.rate, 1),
            "messages_per_s": round(self.messages_per_s, 1),
            "processes": {name: usage.as_dict() for name, usage in self.processes.items()},
            **({"details": self.details} if self.details else {}),
        }


@dataclass
class Comparison:
    """A figure beside its baseline: ``ratio = subject / baseline`` readings/s, ``met`` when at least
    ``target``.

    Measured over several interleaved ``trials`` (see ``interleave``), the ratio is the median of the
    trials' ratios and ``subject``/``baseline`` are the runs of the median trial; ``spread`` gives the
    lowest and highest trial ratio, so a reader sees how far one run can be trusted on a noisy machine.
    """

    bench: str
    case: str
    subject: Run
    baseline: Run | None
    target: float | None
    profile: str | None = None
    notes: list[str] = field(default_factory=list)
    trials: list[tuple[Run, Run | None]] = field(default_factory=list)

    @classmethod
    def of_trials(cls, bench: str, case: str, trials: list[tuple[Run, Run | None]],
                  target: float | None) -> Comparison:
        """The comparison of interleaved trials, represented by the trial with the median ratio."""
        if not trials:
            raise ValueError("a comparison needs at least one trial")
        ranked = sorted(trials, key=lambda t: _trial_ratio(t) or 0.0)
        subject, baseline = ranked[(len(ranked) - 1) // 2]
        return cls(bench, case, subject, baseline, target, trials=list(trials))

    @property
    def ratio(self) -> float | None:
        if self.trials:
            return median([r for t in self.trials if (r := _trial_ratio(t)) is not None])
        return ratio(self.subject.rate, self.baseline.rate if self.baseline else None)

    @property
    def spread(self) -> tuple[float, float] | None:
        """The lowest and the highest trial ratio; None for a single run."""
        ratios = [r for t in self.trials if (r := _trial_ratio(t)) is not None]
        return (min(ratios), max(ratios)) if len(ratios) > 1 else None

    @property
    def met(self) -> bool | None:
        if self.ratio is None or self.target is None:
            return None
        return self.ratio >= self.target

    def as_dict(self) -> dict[str, Any]:
        return {
            "bench": self.bench, "case": self.case, "subject": self.subject.as_dict(),
            "baseline": self.baseline.as_dict() if self.baseline else None,
            "ratio": None if self.ratio is None else round(self.ratio, 3), "target": self.target,
            "met": self.met, "profile": self.profile, "notes": self.notes,
            **({"spread": [round(x, 3) for x in self.spread]} if self.spread else {}),
            **({"trials": [{"subject_readings_per_s": round(s.rate, 1),
                            "baseline_readings_per_s": round(b.rate, 1) if b else None,
                            "ratio": None if (r := _trial_ratio((s, b))) is None else round(r, 3)}
                           for s, b in self.trials]} if len(self.trials) > 1 else {}),
        }


def _trial_ratio(trial: tuple[Run, Run | None]) -> float | None:
    subject, baseline = trial
    return ratio(subject.rate, baseline.rate if baseline else None)


def interleave(repeats: int, subject: Callable[[int], Run], baseline: Callable[[int], Run],
               say: Callable[[str], object] = lambda _m: None) -> list[tuple[Run, Run]]:
    """``repeats`` trials of subject and baseline, run alternately (ABBA: even trials baseline first, odd
    trials subject first), so a change in the machine's load falls on both alike. Each callable gets the
    trial number, for naming its logs and client ids."""
    trials = []
    for i in range(repeats):
        order = ("baseline", "subject") if i % 2 == 0 else ("subject", "baseline")
        runs: dict[str, Run] = {}
        for role in order:
            runs[role] = (baseline if role == "baseline" else subject)(i)
        r = _trial_ratio((runs["subject"], runs["baseline"]))
        say(f"  trial {i + 1}/{repeats}: {runs['subject'].rate:,.0f} vs {runs['baseline'].rate:,.0f} readings/s"
            f" (ratio {r or 0:.2f}); load average {psutil.getloadavg()[0]:.1f}")
        trials.append((runs["subject"], runs["baseline"]))
    return trials


@dataclass
class BenchResult:
    name: str
    config: dict[str, Any]
    comparisons: list[Comparison] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"config": self.config, "comparisons": [c.as_dict() for c in self.comparisons], **self.extra}


def machine() -> dict[str, Any]:
    """What the numbers ran on, and how busy it was with other work (for judging the noise)."""
    return {
        "cpus": psutil.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(), "platform": platform.platform(),
        "load_avg": [round(x, 2) for x in psutil.getloadavg()],
    }


def results_document(benches: list[BenchResult], started: float, host_before: dict[str, Any]) -> dict[str, Any]:
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": {**host_before, "load_avg_at_end": machine()["load_avg"]},
        "benches": {b.name: b.as_dict() for b in benches},
    }


def write_results(document: dict[str, Any], out_dir: Path) -> Path:
    path = out_dir / "results.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


# -- tables ----------------------------------------------------------------------------------------------
def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    # A "|" inside a cell (the baseline "mosquitto_sub | kcat -P") would end the cell in Markdown.
    header, rows = [c.replace("|", "\\|") for c in header], [[c.replace("|", "\\|") for c in r] for r in rows]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                          for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def comparisons_of(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for bench in document["benches"].values() for c in bench.get("comparisons", [])]


def _ratio_cell(c: dict[str, Any]) -> str:
    """The ratio, and with interleaved trials their spread and count: ``0.52 (0.48-0.55, n=3)``."""
    cell = _num(c["ratio"], 2)
    if c.get("spread"):
        low, high = c["spread"]
        cell += f" ({low:.2f}-{high:.2f}, n={len(c.get('trials', []))})"
    return cell


def summary_table(document: dict[str, Any]) -> str:
    """One line per figure: readings/s beside its baseline, the ratio and the target (Markdown)."""
    rows = []
    for c in comparisons_of(document):
        base = c["baseline"]
        met = {True: "yes", False: "**no**", None: "-"}[c["met"]]
        rows.append([
            c["bench"], c["case"], _num(c["subject"]["readings_per_s"]), _num(c["subject"]["messages_per_s"]),
            base["tool"] if base else "-", _num(base["readings_per_s"]) if base else "-",
            _ratio_cell(c), "-" if c["target"] is None else f">= {c['target']:.2f}", met,
        ])
    header = ["bench", "case", "readings/s", "msgs/s", "baseline", "baseline readings/s", "ratio", "target", "met"]
    return _table(header, rows, right={2, 3, 5, 6})


def process_table(document: dict[str, Any]) -> str:
    """CPU and peak memory of every process in every run (Markdown)."""
    rows = []
    shown = set()
    for c in comparisons_of(document):
        for role in ("subject", "baseline"):
            run = c[role]
            if not run:
                continue
            # A baseline shared by several cases (ingest's) is listed once, under the first.
            key = (c["bench"], role, json.dumps(run, sort_keys=True))
            if key in shown:
                continue
            shown.add(key)
            for name, u in run["processes"].items():
                rows.append([c["bench"], c["case"], run["tool"], name, _num(u["cpu_pct"]), _num(u["cpu_s"], 1),
                             _num(u["peak_rss_mb"])])
    header = ["bench", "case", "run", "process", "CPU % (100 = 1 core)", "CPU s", "peak RSS MB"]
    return _table(header, rows, right={4, 5, 6})


def e2e_table(document: dict[str, Any]) -> str:
    steps = document["benches"].get("e2e", {}).get("steps", [])
    if not steps:
        return ""
    rows = [[
        _num(s["offered_rate"]), _num(s["achieved_rate"]), _num(s.get("batch_p95_ms")), _num(s.get("batch_max_ms")),
        _num(s.get("freshness_p50_s"), 2), _num(s.get("freshness_p99_s"), 2), _num(s.get("lost")),
        _num(s.get("double_counted")), "pass" if s["passed"] else "**fail**: " + "; ".join(s["failed"]),
    ] for s in steps]
    header = ["offered r/s", "achieved r/s", "batch p95 ms", "batch max ms", "fresh p50 s", "fresh p99 s", "lost",
              "double", "verdict"]
    return _table(header, rows, right=set(range(8)))


def format_report(document: dict[str, Any]) -> str:
    m = document["machine"]
    parts = [
        f"tsdemo bench, {document['started_at']}, {document['duration_s']:.0f}s on {m['cpus']} CPUs "
        f"(load average {m['load_avg'][0]:.1f} at start, {m['load_avg_at_end'][0]:.1f} at end)",
        "", summary_table(document), "", process_table(document),
    ]
    e2e = e2e_table(document)
    if e2e:
        parts += ["", "e2e ramp:", e2e]
    errors = [f"- {name}: {bench['error']}" for name, bench in document["benches"].items() if bench.get("error")]
    if errors:
        parts += ["", "failed (what they measured before failing is above):", *errors]
    notes = [f"- {c['bench']} / {c['case']}: {n}" for c in comparisons_of(document) for n in c["notes"]]
    profiles = [f"- {c['bench']} / {c['case']}: {c['profile']}" for c in comparisons_of(document) if c["profile"]]
    if notes:
        parts += ["", "notes:", *notes]
    if profiles:
        parts += ["", "profiles (where the time goes):", *profiles]
    return "\n".join(parts)


if __name__ == "__main__":
    print(format_report(json.loads(Path(sys.argv[1]).read_text())))
