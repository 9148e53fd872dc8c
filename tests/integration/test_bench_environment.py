"""A bench ended by SIGTERM (``timeout``, a CI job's end, ``kill``) stops the servers it started, as Ctrl-C
does: they run in sessions of their own and would otherwise outlive it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deploy.wait import wait_until

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from deploy.bench.environment import BenchEnvironment

    with BenchEnvironment(Path(sys.argv[1])) as env:
        print(env.mosquitto().pid, env.state_dir, flush=True)
        time.sleep(120)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_the_servers_a_bench_started(tmp_path: Path) -> None:
    pid = 0
    bench = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "out")], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert bench.stdout is not None
        line = bench.stdout.readline().split()
        assert line, bench.stderr.read() if bench.poll() is not None else "no server pid printed"
        pid, state_dir = int(line[0]), Path(line[1])
        assert _alive(pid)
        bench.send_signal(signal.SIGTERM)
        assert bench.wait(60) == 128 + signal.SIGTERM
        wait_until(lambda: not _alive(pid), 30, "mosquitto stopped with the bench")
        assert not state_dir.exists()  # and its temporary state removed, as after a normal end
    finally:
        if bench.poll() is None:
            bench.kill()
        if pid and _alive(pid):  # what this test guards against: do not leave it behind either
            os.kill(pid, signal.SIGKILL)
