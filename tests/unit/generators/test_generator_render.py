"""Pre-rendered payloads (for mosquitto_pub) and the accounting they imply, without a broker."""

from __future__ import annotations

import json

from generators.ledger import Ledger
from generators.render import render_messages, write_payloads
from generators.settings import GeneratorSettings
from servicekit.contract.ledger import load_ledger
from tests.support.tally import Tally

START = 1_800_000_000_000

FAULTY = dict(
    anomaly_rate=0.02, duplicate_rate=0.03, out_of_order_rate=0.03, late_rate=0.03, late_delay_s=120,
    clock_skew_rate=0.2, offline_rate=0.002, offline_duration_s=45, reboot_rate=0.003, malformed_rate=0.03,
)


def settings(**kw) -> GeneratorSettings:
    return GeneratorSettings(**{"devices": 30, "sites": 3, "rate": 200.0, "batch": 4, "ledger_path": None, **kw})


def test_same_settings_and_start_give_the_same_bytes():
    a = [(m.topic, m.payload) for m in render_messages(settings(**FAULTY), 3000, START)]
    b = [(m.topic, m.payload) for m in render_messages(settings(**FAULTY), 3000, START)]
    c = [(m.topic, m.payload) for m in render_messages(settings(**FAULTY, seed=43), 3000, START)]
    assert a == b and a != c
    assert {t.rsplit("/", 1)[1][:3] for t, _ in a} >= {"gw-"}


def test_the_ledger_equals_an_independent_tally_of_the_payloads_with_every_fault():
    s = settings(**FAULTY)
    ledger = Ledger(None, late_threshold_ms=30_000)
    tally = Tally(30_000)
    for m in render_messages(s, 10_000, START, ledger):
        tally.add(m.payload)
    f = ledger.snapshot()
    assert f["published"] == tally.readings
    assert (f["malformed_sent"], f["duplicates_sent"], f["messages_acked"]) == (
        tally.malformed, tally.duplicates, tally.messages)
    assert tally.malformed > 0 and tally.duplicates > 0

    counts = {(d, m): {int(b): n for b, n in bk.items()} for d, dev in f["devices"].items()
              for m, bk in dev["metrics"].items()}
    late = {(d, m): {int(b): n for b, n in bk.items()} for d, ms in f["late"].items() for m, bk in ms.items()}
    assert counts == tally.plain(tally.counts)
    assert late == tally.plain(tally.late) and late  # the late readings (120 s behind, offline backlogs) show
    assert f["late_published"] == tally.late_readings > 0


def test_without_faults_every_reading_is_counted_once_and_on_time():
    ledger = Ledger(None, late_threshold_ms=30_000)
    messages = list(render_messages(settings(), 2000, START, ledger))
    assert ledger.published == 2000 and ledger.late_published == 0
    assert ledger.malformed_sent == ledger.duplicates_sent == 0 and ledger.messages_acked == len(messages)
    assert sum(len(m.items) for m in messages) == 2000 and all(len(m.items) == 4 for m in messages[:-3])


def test_payload_files_replay_line_by_line_with_their_ledger(tmp_path):
    rendered = write_payloads(settings(**FAULTY), 3000, tmp_path, START)
    topics = json.loads((tmp_path / "topics.json").read_text())
    assert set(topics) == set(rendered.files)
    lines = 0
    tally = Tally(30_000)
    for name in topics.values():
        for line in (tmp_path / name).read_bytes().splitlines():
            assert line  # mosquitto_pub -l skips empty lines: there must be none
            tally.add(line)
            lines += 1
    assert lines == rendered.messages
    header = load_ledger(rendered.ledger_path).header
    assert header["complete"] and header["published"] == rendered.readings == tally.readings
    assert header["malformed_sent"] == tally.malformed and rendered.labels_path is not None
    assert rendered.labels_path.read_text().count("\n") > 0
