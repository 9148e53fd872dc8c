"""Where the time goes inside Spark's JVM: Java Flight Recorder, which ships with the JDK, started and
dumped with ``jcmd`` on the running job (no restart, no change to the job, about 1% overhead), then
its CPU samples (``jdk.ExecutionSample``, read with the JDK's ``jfr`` tool) summarized like the
Python profiles: by thread, by the method a sample was in, by package, and on the stack.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import psutil

from deploy.bench.profiles import render_summary
from deploy.servers.artifacts import java_binary

RECORDING = "tsdemo-bench"
_FRAME = re.compile(r"^\s+([\w$.<>]+)\(.*\)\s+line:")
_THREAD = re.compile(r'sampledThread = "(.*)" \(javaThreadId')


def _jdk_tool(name: str) -> str | None:
    beside = Path(java_binary()).resolve().parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def java_pid(root_pid: int) -> int | None:
    """The JVM under a process (pyspark starts one beneath the Python driver)."""
    try:
        for proc in [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]:
            if proc.name() == "java":
                return proc.pid
    except psutil.Error:
        return None
    return None


def start(pid: int) -> bool:
    """Start recording CPU samples in the JVM ``pid``; False when jcmd is missing or refused."""
    jcmd = _jdk_tool("jcmd")
    if jcmd is None:
        return False
    done = subprocess.run([jcmd, str(pid), "JFR.start", f"name={RECORDING}", "settings=profile"],
                          capture_output=True, text=True, timeout=60)
    return done.returncode == 0 and "Started recording" in done.stdout


def stop(pid: int, out: Path) -> Path | None:
    """Dump the recording to ``out`` (a .jfr file) and write its summary next to it; the summary's path."""
    jcmd = _jdk_tool("jcmd")
    if jcmd is None:
        return None
    subprocess.run([jcmd, str(pid), "JFR.stop", f"name={RECORDING}", f"filename={out}"], capture_output=True,
                   timeout=120)
    if not out.exists():
        return None
    jfr = _jdk_tool("jfr")
    if jfr is None:
        return None
    printed = subprocess.run([jfr, "print", "--events", "jdk.ExecutionSample", str(out)], capture_output=True,
                             text=True, timeout=300)
    summary = out.with_suffix(".summary.txt")
    summary.write_text(summarize(printed.stdout, out.stem))
    return summary


def _thread_group(name: str) -> str:
    # "Executor task launch worker for task 3.0 in stage 12.0 (TID 40)" -> one line per kind of thread
    name = re.sub(r"\[id = .*", "", name)
    return re.sub(r"\d+(\.\d+)?", "#", name).strip()


def _package(method: str) -> str:
    parts = method.split(".")
    return ".".join(parts[:min(4, len(parts) - 2)]) if len(parts) > 2 else method


def summarize(printed: str, title: str = "jvm", top: int = 15) -> str:
    """A summary of ``jfr print --events jdk.ExecutionSample`` output."""
    threads: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    thread, frames = None, []

    def close() -> None:
        nonlocal total
        if thread is None or not frames:
            return
        total += 1
        threads[_thread_group(thread)] += 1
        self_time[frames[0]] += 1
        packages[_package(frames[0])] += 1
        for method in set(frames):
            inclusive[method] += 1

    for line in printed.splitlines():
        if line.startswith("jdk.ExecutionSample"):
            close()
            thread, frames = None, []
        elif (match := _THREAD.search(line)) is not None:
            thread = match.group(1)
        elif (match := _FRAME.match(line)) is not None:
            frames.append(match.group(1))
    close()
    if not total:
        return f"{title}: no CPU samples\n"
    return render_summary(f"{title}: {total} JVM CPU samples (Java Flight Recorder)", total, top, [
        ("by thread:", threads),
        ("self, by package:", packages),
        ("self (the method the sample was in):", self_time),
        ("inclusive (on the stack, as deep as JFR keeps it):", inclusive),
    ])
