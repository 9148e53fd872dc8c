"""Where the time goes in a Python hop: py-spy samples the process from outside (all threads, with
Python subprocesses on request), so the service runs unmodified and pays only for being read.

Each profile is kept raw (collapsed stacks: ``flamegraph.pl`` and speedscope read them) and as a
text summary: time per thread, the functions the samples were in (self) and the functions on the
stack (inclusive). py-spy leaves out idle samples, so shares are of the time spent on CPU.
"""

from __future__ import annotations

import re
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path

from deploy.services.process import Process, spawn

_WARNED = False
_LINE = re.compile(r"^(.*) (\d+)$")
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy_binary() -> str | None:
    """py-spy next to this interpreter (installed into the venv) or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def wanted(mode: str, met: bool | None) -> bool:
    """Whether to profile a figure: ``--profile always``, or ``missed`` and its target was missed.

    Without py-spy installed there is nothing to profile with; the bench says so once and goes on.
    """
    if not (mode == "always" or (mode == "missed" and met is False)):
        return False
    if py_spy_binary() is None:
        global _WARNED
        if not _WARNED:
            print("tsdemo bench: py-spy is not installed (pip install py-spy); no profiles", file=sys.stderr)
            _WARNED = True
        return False
    return True


def attach(name: str, pid: int, raw_path: Path, log_path: Path, rate_hz: int = 100,
           subprocesses: bool = False) -> Process:
    """Start sampling a running process (``--nonblocking``: it is never paused); ``detach`` ends it and
    writes the profile. Attaching to a running service keeps its start-up out of the profile."""
    binary = py_spy_binary()
    if binary is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy into the venv)")
    cmd = [binary, "record", "--nonblocking", "--threads", "-r", str(rate_hz), "-f", "raw", "-o", str(raw_path),
           "--pid", str(pid), *(["--subprocesses"] if subprocesses else [])]
    return spawn(f"py-spy {name}", cmd, log_path)


def detach(recorder: Process, raw_path: Path, title: str | None = None, timeout_s: float = 60.0) -> Path | None:
    """Stop ``recorder`` (py-spy writes its file on SIGINT) and write the summary; its path or None."""
    recorder.stop(timeout_s, signal.SIGINT)
    return write_summary(raw_path, title)


def write_summary(raw_path: Path, title: str | None = None) -> Path | None:
    if not raw_path.exists() or raw_path.stat().st_size == 0:
        return None
    summary = raw_path.with_suffix(".summary.txt")
    summary.write_text(summarize(raw_path.read_text(errors="replace"), title or raw_path.stem))
    return summary


def _short(frame: str) -> str:
    """``func (path/to/file.py:12)`` as ``func (pkg/file.py)``: grouped per function, not per line."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3."):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "lib/python3.":
                path = path.split("/", 1)[-1]
    return f"{match['func']} ({path})"


def _thread(frame: str) -> str:
    # "thread (1234): MainThread" -> "MainThread"; py-spy names a thread it cannot name by its id only.
    return frame.split(": ", 1)[1] if ": " in frame else frame


def _process(frame: str) -> str:
    """``process 12: "/path/python3 -m pyspark.daemon ..."`` as ``python3 -m pyspark.daemon``."""
    command = frame.split(":", 1)[1].strip().strip('"') if ":" in frame else frame
    argv = command.split()
    if not argv:
        return frame
    shown = [argv[0].rsplit("/", 1)[-1]]
    if "-m" in argv[1:]:
        i = argv.index("-m")
        shown += argv[i:i + 2]
    return " ".join(shown)


def _split(frames: list[str]) -> tuple[str, list[str]]:
    """(where: "process / thread", the Python frames) of one collapsed stack."""
    where = []
    rest = frames
    processes = [f for f in frames if f.startswith("process ")]
    if processes:
        # With --subprocesses, a stack starts with its chain of processes; the last one ran it.
        where.append(_process(processes[-1]))
        rest = frames[len(processes):] if frames[:len(processes)] == processes else frames
    if rest and rest[0].startswith("thread "):
        where.append(_thread(rest[0]))
        rest = rest[1:]
    return " / ".join(where) or "?", rest


def summarize(raw: str, title: str = "profile", top: int = 15) -> str:
    """A readable summary of py-spy's collapsed stacks (``frame;frame;... count`` per line)."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        count = int(match.group(2))
        total += count
        where, frames = _split(match.group(1).split(";"))
        threads[where] += count
        stack = [_short(f) for f in frames]
        if not stack:
            continue
        self_time[stack[-1]] += count
        for name in set(stack):
            inclusive[name] += count
    if not total:
        return f"{title}: no samples\n"
    return render_summary(f"{title}: {total} samples on CPU (idle samples left out)", total, top, [
        ("by process and thread:", threads),
        ("self (the function the sample was in):", self_time),
        ("inclusive (on the stack):", inclusive),
    ])


def render_summary(heading: str, total: int, top: int, blocks: list[tuple[str, Counter[str]]]) -> str:
    """A profile summary: the heading, then each block's ``top`` entries as shares of ``total``."""
    lines = [heading]
    for title, counter in blocks:
        lines += ["", title] + [f"  {100 * n / total:5.1f}%  {name}" for name, n in counter.most_common(top)]
    return "\n".join(lines) + "\n"
