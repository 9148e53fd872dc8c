"""The readable summaries of py-spy's collapsed stacks and of Java Flight Recorder's CPU samples."""

from __future__ import annotations

from deploy.bench.jvm_profile import summarize as summarize_jfr
from deploy.bench.profiles import summarize

PY_SPY = """\
thread (1): MainThread;<module> (/work/main/deploy/cli.py:50);run (/work/main/generators/run.py:150);\
publish (/work/main/.venv/lib/python3.11/site-packages/paho/mqtt/client.py:1200) 6
thread (2): paho-thread;_thread_main (/x/site-packages/paho/mqtt/client.py:4000);\
crc_update (/x/site-packages/kafka/record/_crc32c.py:10) 3
process 10:"/usr/bin/java -cp x Main";process 11:"/v/bin/python3 -m pyspark.daemon";thread (3): MainThread;\
main (/v/site-packages/pyspark/worker.py:1) 1
"""


def test_py_spy_summary_groups_by_thread_and_function():
    text = summarize(PY_SPY, "generator")
    assert "generator: 10 samples" in text
    assert "60.0%  MainThread" in text and "30.0%  paho-thread" in text
    assert "10.0%  python3 -m pyspark.daemon / MainThread" in text
    # grouped per function, file shortened to the package path
    assert "60.0%  publish (paho/mqtt/client.py)" in text
    assert "30.0%  crc_update (kafka/record/_crc32c.py)" in text
    assert "60.0%  run (generators/run.py)" in text  # inclusive
    assert summarize("", "empty") == "empty: no samples\n"


JFR = """\
jdk.ExecutionSample {
  startTime = 12:00:00.100
  sampledThread = "Executor task launch worker for task 3.0 in stage 12.0 (TID 40)" (javaThreadId = 70)
  state = "STATE_RUNNABLE"
  stackTrace = [
    com.fasterxml.jackson.core.json.ReaderBasedJsonParser.nextToken() line: 700
    org.apache.spark.sql.catalyst.json.JacksonParser.parse(Object, Function2, Function1) line: 10
  ]
}

jdk.ExecutionSample {
  startTime = 12:00:00.110
  sampledThread = "Executor task launch worker for task 4.0 in stage 13.0 (TID 41)" (javaThreadId = 71)
  state = "STATE_RUNNABLE"
  stackTrace = [
    org.apache.spark.sql.catalyst.json.JacksonParser.parse(Object, Function2, Function1) line: 12
  ]
}
"""


def test_jfr_summary_groups_threads_packages_and_methods():
    text = summarize_jfr(JFR, "job")
    assert "job: 2 JVM CPU samples" in text
    assert "100.0%  Executor task launch worker for task # in stage # (TID #)" in text
    assert "50.0%  com.fasterxml.jackson.core" in text and "50.0%  org.apache.spark.sql" in text
    assert "100.0%  org.apache.spark.sql.catalyst.json.JacksonParser.parse" in text  # inclusive
    assert summarize_jfr("", "none") == "none: no CPU samples\n"
