"""Precision and recall of stored detections against ground-truth labels."""

import pytest

from deploy.checks.scoring import score


def label(dev, metric, seq, kind, episode, boot=0):
    return {"device_id": dev, "metric": metric, "boot": boot, "seq": seq, "kind": kind, "episode": episode}


LABELS = [
    label("d1", "t", 10, "spike", 1),
    *[label("d1", "t", s, "stuck", 2) for s in range(20, 30)],
    label("d2", "t", 5, "spike", 3),
    label("d2", "t", 6, "dropout", 4),
]


def test_episodes_found_and_detections_right():
    detections = [("d1", "t", 0, 10), ("d1", "t", 0, 27), ("d1", "t", 0, 28), ("d2", "t", 0, 40)]
    s = score(LABELS, detections)
    assert s.episodes == {"spike": 2, "stuck": 1}
    assert s.found == {"spike": 1, "stuck": 1}
    assert s.recall == pytest.approx(2 / 3)
    assert s.precision == pytest.approx(3 / 4)
    assert s.unseeable_episodes == 1


def test_another_boot_is_another_reading():
    s = score(LABELS, [("d1", "t", 1, 10)])
    assert s.true_detections == 0 and s.precision == 0.0 and s.recall == 0.0


def test_nothing_to_score_gives_none_not_a_made_up_number():
    s = score([], [])
    assert s.precision is None and s.recall is None
