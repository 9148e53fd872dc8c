"""deploy.servers.stop_process: how the stack and the tests stop a service process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from deploy.servers import stop_process


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_a_process_that_stops_on_sigterm_is_not_killed():
    proc = _python("import signal, sys, time\n"
                   "signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))\n"
                   "print('ready', flush=True)\ntime.sleep(60)")
    assert proc.stdout.readline() == "ready\n"
    assert stop_process(proc, timeout=30) == 3
    proc.stdout.close()


def test_a_process_ignoring_the_signal_is_killed_after_the_timeout():
    proc = _python("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                   "print('ready', flush=True)\ntime.sleep(60)")
    assert proc.stdout.readline() == "ready\n"
    started = time.monotonic()
    assert stop_process(proc, timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 30
    proc.stdout.close()


def test_another_signal_and_an_exited_process():
    # The child sets its own handler: one started from a background shell job inherits SIGINT ignored.
    proc = _python("import signal, sys, time\nsignal.signal(signal.SIGINT, lambda *_: sys.exit(5))\n"
                   "print('ready', flush=True)\ntime.sleep(60)")
    assert proc.stdout.readline() == "ready\n"
    assert stop_process(proc, sig=signal.SIGINT, timeout=30) == 5
    done = _python("pass")
    done.wait()
    assert stop_process(done) == 0
    for p in (proc, done):
        p.stdout.close()
