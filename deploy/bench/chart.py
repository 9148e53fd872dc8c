"""``results.png``: each figure beside its baseline (readings/s, log scale, the ratio written on it)
and, when the e2e ramp ran, its steps: achieved against offered rate and p99 freshness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deploy.bench.report import comparisons_of


def draw(document: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server
    import matplotlib.pyplot as plt

    comparisons = [c for c in comparisons_of(document) if c["baseline"] and c["case"] != "stretch goal"]
    steps = document["benches"].get("e2e", {}).get("steps", [])
    rows = 1 + bool(steps)
    fig, axes = plt.subplots(rows, 1, figsize=(11, 1.5 + 0.55 * max(len(comparisons), 2) + 4 * (rows - 1)),
                             squeeze=False, gridspec_kw={"height_ratios": [max(len(comparisons), 2), 6][:rows]})
    ax = axes[0][0]
    labels = [f"{c['bench']}: {c['case']}" for c in comparisons]
    ys = range(len(comparisons))
    subject = [c["subject"]["readings_per_s"] for c in comparisons]
    baseline = [c["baseline"]["readings_per_s"] for c in comparisons]
    ax.barh([y + 0.2 for y in ys], subject, height=0.4, label="tsdemo", color="#1f77b4")
    ax.barh([y - 0.2 for y in ys], baseline, height=0.4, label="baseline (same run)", color="#bbbbbb")
    # A bar of 0 (nothing sustained) has its label at the axis' left end, not at 0 off a log axis.
    floor = min((v for v in subject + baseline if v > 0), default=1)
    for y, c in zip(ys, comparisons, strict=True):
        ok = {True: "met", False: "missed", None: ""}[c["met"]]
        ax.text(max(c["subject"]["readings_per_s"], floor), y + 0.2,
                f"  x{c['ratio']:.2f} {ok}" if c["ratio"] is not None else "",
                va="center", fontsize=8, color="#2ca02c" if c["met"] else "#d62728")
    ax.set_yticks(list(ys), labels, fontsize=8)
    ax.invert_yaxis()
    if any(v > 0 for v in subject + baseline):
        ax.set_xscale("log")
    ax.set_xlabel("readings/s (log)")
    ax.set_title(f"tsdemo bench {document['started_at']} ({document['machine']['cpus']} CPUs, "
                 f"load {document['machine']['load_avg'][0]:.1f})", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    if steps:
        ax2 = axes[1][0]
        offered = [s["offered_rate"] for s in steps]
        achieved = [s["achieved_rate"] for s in steps]
        ax2.plot(offered, offered, ":", marker=".", color="#999999", label="offered")
        ax2.plot(offered, achieved, "-", color="#1f77b4", label="achieved")
        for s in steps:
            ax2.scatter(s["offered_rate"], s["achieved_rate"], color="#2ca02c" if s["passed"] else "#d62728",
                        zorder=3)
        ax2.set_xlabel("offered readings/s (e2e ramp; green: passed, red: failed)")
        ax2.set_ylabel("achieved readings/s")
        fresh = ax2.twinx()
        fresh.plot(offered, [s["freshness_p99_s"] or 0 for s in steps], "--", marker="s", color="#ff7f0e",
                   label="p99 freshness (s)")
        fresh.axhline(document["benches"]["e2e"]["config"].get("freshness_target_s", 5), color="#ff7f0e",
                      alpha=0.3)
        fresh.set_ylabel("p99 freshness, s")
        # From zero, and with room either side: a ramp that stopped at its first step is one point.
        ax2.set_ylim(bottom=0, top=max(offered + achieved) * 1.15)
        fresh.set_ylim(bottom=0)
        ax2.set_xlim(0, max(offered) * 1.15)
        ax2.legend(loc="upper left", fontsize=8)
        fresh.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
