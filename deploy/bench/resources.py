"""CPU time and peak memory of the processes a bench runs, each counted with all its descendants.

A process is watched as a tree (``tsdemo process`` is a Python driver, a JVM under it and Python
workers under that). At any instant the tree's CPU total is the sum, over the live processes in it,
of their own user+system time plus the time of the children they have already reaped; a child that
exits moves its time into its parent's "children" counters, so nothing is counted twice or lost.
A watch reports the difference between its first and last sample. Peak memory is the largest summed
RSS seen at any sample (every ``interval_s``).

A process that ends during the watch keeps its last sample; ``final_sample`` lets the caller take
an exact one while the process is a zombie, before it is reaped (see ``deploy.bench.children``).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import psutil


@dataclass(frozen=True)
class Usage:
    """One process tree over one measured window."""

    cpu_s: float
    wall_s: float
    peak_rss_mb: float

    @property
    def cpu_pct(self) -> float:
        """Average CPU over the window, 100 = one core busy all the time."""
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"cpu_s": round(self.cpu_s, 3), "cpu_pct": round(self.cpu_pct, 1),
                "peak_rss_mb": round(self.peak_rss_mb, 1), "wall_s": round(self.wall_s, 3)}


def _own_and_reaped(times: Any) -> float:
    return times.user + times.system + getattr(times, "children_user", 0.0) + getattr(times, "children_system", 0.0)


def tree_sample(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, RSS bytes) of ``pid`` and its live descendants; None once ``pid`` is gone."""
    try:
        root = psutil.Process(pid)
        members = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    cpu, rss = 0.0, 0
    for proc in members:
        try:
            with proc.oneshot():
                cpu += _own_and_reaped(proc.cpu_times())
                rss += proc.memory_info().rss
        except psutil.Error:  # exited between the listing and the read: its time is in its parent now
            continue
    return cpu, rss


class _Tree:
    def __init__(self, pid: int, started: float) -> None:
        self.pid = pid
        self.started = started
        self.first_cpu: float | None = None
        self.last_cpu: float | None = None
        self.ended = started
        self.rss = 0  # at the latest sample
        self.closed = False

    def record(self, now: float, sample: tuple[float, int] | None) -> None:
        if self.closed:
            return
        if sample is None:
            self.rss = 0
            return
        cpu, self.rss = sample
        if self.first_cpu is None:
            self.first_cpu = cpu
        self.last_cpu = cpu
        self.ended = now

    @property
    def cpu_s(self) -> float:
        # Since the first sample; a tree watched as it starts has used next to nothing before it.
        return max((self.last_cpu or 0.0) - (self.first_cpu or 0.0), 0.0)


class ResourceMonitor:
    """Samples named process trees on a background thread while a measurement runs.

    ``watch(name, pid)`` any time (a process started mid-window is measured from then on); watching
    a name again adds another process under it (one tool run per topic counts as one): their CPU adds
    up, their RSS too at each sample, and the CPU share is over the span from the first start to the
    last exit. ``stop()`` returns each name's ``Usage``, so per-process CPU sits beside the
    readings/s of the same window.
    """

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self._trees: dict[str, list[_Tree]] = {}
        self._peaks: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = 0.0
        self.stopped: float | None = None

    def start(self) -> ResourceMonitor:
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="bench-resources", daemon=True)
        self._thread.start()
        return self

    def watch(self, name: str, pid: int | None) -> None:
        if pid is None:
            return
        now = time.monotonic()
        tree = _Tree(pid, now)
        tree.record(now, tree_sample(pid))
        with self._lock:
            self._trees.setdefault(name, []).append(tree)
            self._note_peak(name)

    def final_sample(self, name: str) -> None:
        """Take the last sample of ``name``'s newest process now: it has exited but is not reaped yet."""
        with self._lock:
            trees = self._trees.get(name)
            tree = trees[-1] if trees else None
        if tree is not None:
            tree.record(time.monotonic(), tree_sample(tree.pid))
            tree.closed = True

    def _note_peak(self, name: str) -> None:
        total = sum(t.rss for t in self._trees[name] if not t.closed)
        self._peaks[name] = max(self._peaks.get(name, 0), total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample_all()

    def _sample_all(self) -> None:
        with self._lock:
            trees = [(name, tree) for name, group in self._trees.items() for tree in group]
        now = time.monotonic()
        samples = [(name, tree, tree_sample(tree.pid)) for name, tree in trees if not tree.closed]
        with self._lock:
            for _name, tree, sample in samples:
                tree.record(now, sample)
            for name in {name for name, _, _ in samples}:
                self._note_peak(name)

    def stop(self) -> dict[str, Usage]:
        """Stop sampling; each name's CPU seconds, CPU share and peak RSS over the window."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample_all()
        self.stopped = time.monotonic()
        with self._lock:
            return {name: self._usage(name, group) for name, group in self._trees.items()}

    def _usage(self, name: str, group: list[_Tree]) -> Usage:
        assert self.stopped is not None
        start = min(t.started for t in group)
        # A process that ended early is judged over its own life, not the idle rest of the window.
        end = self.stopped if any(not t.closed for t in group) else max(t.ended for t in group)
        return Usage(sum(t.cpu_s for t in group), end - start, self._peaks.get(name, 0) / 2**20)

    def __enter__(self) -> ResourceMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.stopped is None:
            self.stop()
