"""``tsdemo up`` starts again a server or service that died, but not a generator that finished the count it
was given."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.stack.local import LocalStack
from deploy.stack.settings import StackSettings


class Ended:
    """A service process that has exited with ``code``."""

    def __init__(self, code: int) -> None:
        self.returncode = code

    def running(self) -> bool:
        return False

    def tail(self, n: int) -> str:
        return ""


@pytest.fixture
def stack(tmp_path: Path, monkeypatch):
    def make(**settings) -> tuple[LocalStack, list[str]]:
        s = LocalStack(StackSettings(state_dir=tmp_path, grafana=False, **settings))
        started: list[str] = []
        monkeypatch.setattr(s.pipeline, "start", lambda name, **kw: started.append(name))
        monkeypatch.setattr(s, "write_state", lambda: None)
        monkeypatch.setattr(s, "_start_stage_collector", lambda wait=True: started.append("stages"))
        return s, started
    return make


def test_a_generator_that_finished_its_count_is_not_started_again(stack):
    s, started = stack(generator_count=1000)
    s.pipeline.services["generator"] = Ended(0)
    said: list[str] = []
    s.restart_dead_services(said.append)
    s.restart_dead_services(said.append)
    assert started == [] and len(said) == 1 and "finished its 1,000 readings" in said[0]


@pytest.mark.parametrize(("count", "code"), [(1000, 1), (1000, -9), (0, 0)])
def test_a_generator_that_died_or_had_no_count_is_started_again(stack, count, code):
    s, started = stack(generator_count=count)
    s.pipeline.services["generator"] = Ended(code)
    s.restart_dead_services(lambda _: None)
    assert started == ["generator", "stages"]


def test_any_other_service_that_exited_is_started_again(stack):
    s, started = stack(generator_count=1000)
    s.pipeline.services["ingest"] = Ended(0)
    s.restart_dead_services(lambda _: None)
    assert started == ["ingest", "stages"]


class Server:
    """A server of the stack: ``alive`` says whether it runs; ``start`` brings it back (or fails)."""

    endpoint = "mqtt://127.0.0.1:1883"

    def __init__(self, alive: bool, fails: bool = False) -> None:
        self.alive, self.fails, self.starts = alive, fails, 0

    def is_running(self) -> bool:
        return self.alive

    def start(self) -> None:
        from deploy.servers import PortInUseError

        self.starts += 1
        if self.fails:
            raise PortInUseError("port 1883 is already in use")
        self.alive = True

    def wait_ready(self, timeout: float) -> float:
        return 0.0

    def log_tail(self, n: int) -> str:
        return ""


def test_a_killed_server_is_started_again_and_a_running_one_is_left_alone(stack):
    s, _ = stack()
    s.servers = {"mqtt": Server(alive=False), "kafka": Server(alive=True)}
    said: list[str] = []
    s.restart_dead_servers(said.append)
    assert s.servers["mqtt"].starts == 1 and s.servers["kafka"].starts == 0 and s.servers["mqtt"].alive
    s.restart_dead_servers(said.append)
    assert s.servers["mqtt"].starts == 1


def test_a_server_that_cannot_start_again_is_reported_and_tried_at_the_next_tick(stack):
    s, _ = stack()
    s.servers = {"mqtt": Server(alive=False, fails=True)}
    said: list[str] = []
    s.restart_dead_servers(said.append)
    s.restart_dead_servers(said.append)
    assert s.servers["mqtt"].starts == 2 and sum("could not restart mqtt" in line for line in said) == 2
