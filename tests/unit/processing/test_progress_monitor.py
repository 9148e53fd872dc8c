"""The processing job's progress polling: every finished micro-batch is seen once, none is missed."""

from types import SimpleNamespace

from processing.job import ProgressMonitor


def progress(batch: int, run: str = "r1") -> SimpleNamespace:
    return SimpleNamespace(batchId=batch, runId=run)


class Query:
    def __init__(self) -> None:
        self.recentProgress: list[SimpleNamespace] = []

    @property
    def lastProgress(self) -> SimpleNamespace | None:
        return self.recentProgress[-1] if self.recentProgress else None

    def finish(self, *batches: int, run: str = "r1") -> None:
        self.recentProgress += [progress(b, run) for b in batches]


def ids(found: list) -> list[int]:
    return [p.batchId for p in found]


def test_each_batch_is_reported_once_and_a_gap_is_filled_from_the_recent_list():
    monitor, q = ProgressMonitor(), Query()
    assert monitor.new_progress("w", q) == []
    q.finish(0)
    assert ids(monitor.new_progress("w", q)) == [0]
    assert monitor.new_progress("w", q) == []  # nothing new: the same batch is not reported again
    q.finish(1)
    assert ids(monitor.new_progress("w", q)) == [1]
    q.finish(2, 3, 4)  # three batches between two polls
    assert ids(monitor.new_progress("w", q)) == [2, 3, 4]


def test_a_restarted_query_reports_its_batches_again_under_its_new_run():
    monitor, q = ProgressMonitor(), Query()
    q.finish(5, 6)
    assert ids(monitor.new_progress("w", q)) == [5, 6]  # the first look takes all of the run's batches
    restarted = Query()
    restarted.finish(6, run="r2")  # batch 6 replayed from the checkpoint by the new run
    assert ids(monitor.new_progress("w", restarted)) == [6]
    restarted.finish(7, run="r2")
    assert ids(monitor.new_progress("w", restarted)) == [7]
    assert ids(monitor.new_progress("other", q)) == [5, 6]  # queries are tracked apart
