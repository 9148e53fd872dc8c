"""The stage collector's round (its scraping replaced by canned /metrics pages, a unit test of the logic):
each stage's counter read from its component, summed over instances, skipped when an instance fails."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from servicekit.contract import metrics as m
from servicekit.contract.influx import STAGE, STAGE_BRIDGED, STAGE_PUBLISHED, STAGE_REJECTED, STAGE_STORED
from servicekit.scrape import instances, sample_sums
from storage.stages import SOURCES, StageCollector, StagesSettings


def _exposition(values: dict[str, float], labelled: dict[str, dict[str, float]] | None = None) -> str:
    registry = CollectorRegistry()
    for name, value in values.items():
        Counter(name, "doc", registry=registry).inc(value)
    for name, by_label in (labelled or {}).items():
        counter = Counter(name, "doc", ["reason"], registry=registry)
        for label, value in by_label.items():
            counter.labels(label).inc(value)
    return generate_latest(registry).decode()


def test_sample_sums_adds_every_label_set_and_ignores_created_samples():
    text = _exposition({m.INGEST_FORWARDED: 7}, {m.INGEST_REJECTED: {"too_large": 2, "refused_by_kafka": 3}})
    assert sample_sums(text, {m.INGEST_FORWARDED, m.INGEST_REJECTED, "absent_total"}) == {
        m.INGEST_FORWARDED: 7.0, m.INGEST_REJECTED: 5.0}


def test_every_stage_has_a_source_and_every_source_a_stage():
    assert set(SOURCES) == {STAGE_PUBLISHED, STAGE_BRIDGED, STAGE_REJECTED, STAGE_STORED}
    assert {c for c, _ in SOURCES.values()} == {"generator", "ingest", "processing"}


def test_a_round_sums_instances_and_skips_a_component_that_does_not_answer(monkeypatch):
    pages = {
        "http://gen-a/metrics": _exposition({m.GENERATOR_READINGS_ACKED: 100, m.GENERATOR_MESSAGES_ACKED: 50}),
        "http://gen-b/metrics": _exposition({m.GENERATOR_READINGS_ACKED: 20}),
        "http://bridge/metrics": _exposition({m.INGEST_FORWARDED: 60}),  # nothing rejected yet: no sample
    }

    def fetch(url: str, timeout: float = 2.0) -> str:
        if url not in pages:
            from servicekit.scrape import ScrapeError

            raise ScrapeError(f"cannot read {url}")
        return pages[url]

    monkeypatch.setattr("servicekit.scrape.fetch", fetch)
    monkeypatch.setattr("servicekit.scrape.instances", lambda url: [url])
    collector = StageCollector({"generator": ["http://gen-a/metrics", "http://gen-b/metrics"],
                                "ingest": ["http://bridge/metrics"], "processing": ["http://job/metrics"]})
    totals = collector.totals()
    assert totals == {STAGE_PUBLISHED: 120.0, STAGE_BRIDGED: 60.0, STAGE_REJECTED: 0.0}  # the job is down
    points = collector.points(totals, 1_000)
    assert {p["tags"]["stage"]: p["fields"]["total"] for p in points} == totals
    assert {p["measurement"] for p in points} == {STAGE} and {p["time"] for p in points} == {1_000}


def test_one_instance_down_leaves_the_whole_stage_out(monkeypatch):
    def fetch(url: str, timeout: float = 2.0) -> str:
        from servicekit.scrape import ScrapeError

        if "b" in url:
            raise ScrapeError("down")
        return _exposition({m.GENERATOR_READINGS_ACKED: 5})

    monkeypatch.setattr("servicekit.scrape.fetch", fetch)
    monkeypatch.setattr("servicekit.scrape.instances", lambda url: [url])
    assert StageCollector({"generator": ["http://a/metrics", "http://b/metrics"]}).totals() == {}


def test_instances_of_an_address_or_a_one_address_name_is_the_url_itself():
    assert instances("http://127.0.0.1:9100/metrics") == ["http://127.0.0.1:9100/metrics"]
    assert instances("http://localhost:9100/metrics") in (["http://localhost:9100/metrics"],
                                                          ["http://127.0.0.1:9100/metrics",
                                                           "http://[::1]:9100/metrics"])


def test_settings_split_the_url_lists():
    settings = StagesSettings(generator_metrics_urls="http://a:1/metrics, http://b:1/metrics",
                              ingest_metrics_urls="http://i:2/metrics")
    assert settings.targets() == {"generator": ["http://a:1/metrics", "http://b:1/metrics"],
                                  "ingest": ["http://i:2/metrics"], "processing": []}
