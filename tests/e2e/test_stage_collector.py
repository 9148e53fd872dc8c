"""The stage counters end to end: a generator, the bridge and the Spark job running, the stage collector
(``tsdemo storage stages``) reading their own /metrics, and the pipeline dashboard's own stage query (as
provisioned, its macros substituted as Grafana does) returning the published, bridged and stored stages;
once the generator has stopped, each stage's total equals what its ledger says it published."""

from __future__ import annotations

import time

from dashboards import interpolate, provisioning
from dashboards.conventions import PIPELINE_UID
from deploy.wait import wait_until
from servicekit.contract.influx import STAGE, STAGE_BRIDGED, STAGE_PUBLISHED, STAGE_STORED
from servicekit.contract.ledger import load_ledger
from storage.queries import InfluxQuery
from storage.settings import InfluxSettings


def _stage_rates_query() -> str:
    panel = next(p for p in provisioning.dashboards()[PIPELINE_UID]["panels"] if p["id"] == 1)
    return next(t["query"] for t in panel["targets"] if t["refId"] == "A")


def test_the_dashboards_stage_query_returns_published_bridged_and_stored(pipeline, tmp_path):
    query = InfluxQuery(InfluxSettings(influx_url=pipeline.endpoints.influx_url,
                                       influx_database=pipeline.endpoints.influx_database))
    started_ms = int(time.time() * 1000)
    ledger_path = tmp_path / "ledger.json"
    generator = pipeline.start("generator", extra_env={
        "TSDEMO_DEVICES": "12", "TSDEMO_SITES": "2", "TSDEMO_RATE": "120", "TSDEMO_CLIENT_ID": "gen-stages",
        "TSDEMO_LEDGER_PATH": str(ledger_path), "TSDEMO_LEDGER_FLUSH_S": "0.5"})
    # As the local stack starts it: reading the /metrics of the services running now.
    stages = pipeline.start("stages", extra_env={**pipeline.stage_collector_env(), "TSDEMO_STAGES_INTERVAL_S": "1"})
    statement = _stage_rates_query()

    def rates() -> dict[str, float]:
        now_ms = int(time.time() * 1000)
        sql = interpolate.interpolate(statement, from_ms=started_ms - 60_000, to_ms=now_ms, interval_ms=5_000,
                                      variables={})
        rows = query.query(sql)
        per_stage: dict[str, float] = {}
        for row in rows:
            if row.get("per_second") is not None:
                per_stage[row["stage"]] = max(per_stage.get(row["stage"], 0.0), row["per_second"])
        return per_stage

    def totals() -> dict[str, float]:
        rows = query.query(f'SELECT last("total") AS "total" FROM "{STAGE}" GROUP BY "stage"')
        return {r["stage"]: r["total"] for r in rows}

    wanted = {STAGE_PUBLISHED, STAGE_BRIDGED, STAGE_STORED}
    wait_until(lambda: all(rates().get(s, 0) > 0 for s in wanted), 300, "a rate for each of " + ", ".join(wanted),
               every=1.0, detail=lambda: f"rates {rates()}, totals {totals()}, stored windows "
               f"{query.query('SELECT sum(count) FROM device_window')}\n{stages.tail()}\n"
               f"{pipeline.services['processing'].tail()}")
    # 120 readings/s published: its peak 5 s bucket is near that (the job may store a backlog faster).
    assert 20 < rates()[STAGE_PUBLISHED] < 1000

    # Stopped, the generator's count is final; the collector keeps reading the bridge and the job.
    assert generator.stop() == 0
    published = int(load_ledger(ledger_path).header["published"])
    assert published > 0

    wait_until(lambda: totals().get(STAGE_BRIDGED) == published and totals().get(STAGE_STORED) == published, 300,
               f"bridged and stored to reach the {published} readings published", every=1.0,
               detail=lambda: f"totals {totals()}")
    # The last published point was written before the generator's final acknowledgements.
    assert 0 < totals()[STAGE_PUBLISHED] <= published
