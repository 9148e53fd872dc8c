"""storage.queries without a server: the retry policy of the reads processing depends on."""

import time

import pytest

from storage.queries import InfluxQuery, InfluxQueryError
from storage.settings import InfluxSettings


def test_query_retrying_waits_out_an_unreachable_influxdb_but_not_a_refused_query(monkeypatch):
    query = InfluxQuery(InfluxSettings(influx_url="http://127.0.0.1:9", influx_retry_max_s=30))
    answers = [InfluxQueryError("down", server_message="", query="q"),
               InfluxQueryError("503", server_message="", query="q", status=503), [{"n": 1}]]

    def fake(influxql, database=None):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(query, "query", fake)
    monkeypatch.setattr(time, "sleep", lambda s: None)
    assert query.query_retrying("SELECT 1") == [{"n": 1}] and not answers

    answers[:] = [InfluxQueryError("bad", server_message="error parsing query", query="q", status=400)]
    with pytest.raises(InfluxQueryError, match="bad"):
        query.query_retrying("SELEC")
