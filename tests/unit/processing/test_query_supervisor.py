"""The processing job's query supervisor: a stopped query is restarted after its backoff, not before,
and the job gives up only after failures in a row with no finished micro-batch between them."""

from processing.supervisor import FIRST_BACKOFF_S, QuerySupervisor


class Query:
    def __init__(self) -> None:
        self.isActive = True

    def exception(self) -> str:
        return "boom"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def supervised(max_restarts: int = 3):
    started: list[Query] = []

    def plan() -> Query:
        started.append(Query())
        return started[-1]

    clock = Clock()
    return QuerySupervisor({"windows": plan}, max_restarts, clock), started, clock


def test_a_stopped_query_is_restarted_once_its_backoff_has_passed():
    sup, started, clock = supervised()
    started[0].isActive = False
    for _ in range(5):  # checks within the backoff must neither restart it nor count more failures
        assert sup.check()
        clock.now += FIRST_BACKOFF_S / 10
    assert len(started) == 1 and sup.restarts["windows"] == 1
    clock.now = FIRST_BACKOFF_S + 0.1
    assert sup.check()
    assert len(started) == 2 and sup.queries["windows"] is started[1]


def test_it_gives_up_after_failures_in_a_row_and_progress_forgives_them():
    sup, started, clock = supervised(max_restarts=2)
    for _ in range(2):
        started[-1].isActive = False
        assert sup.check()
        clock.now += 1000
        assert sup.check()  # restarted
    sup.progressed("windows")  # the restarted query finished a batch
    assert sup.restarts["windows"] == 0
    for _ in range(2):
        started[-1].isActive = False
        sup.check()
        clock.now += 1000
        sup.check()
    started[-1].isActive = False
    assert not sup.check()  # the third failure in a row


def test_a_checkpoint_from_another_state_layout_stops_at_once_with_what_to_do(caplog):
    sup, started, clock = supervised(max_restarts=20)
    started[0].exception = lambda: ("[STATE_STORE_VALUE_SCHEMA_NOT_COMPATIBLE] Provided value schema does not "
                                    "match existing state value schema.\n...")
    started[0].isActive = False
    assert not sup.check()
    assert len(started) == 1  # not restarted: it could only fail the same way
    assert "Delete that directory" in caplog.text and "windows" in caplog.text
