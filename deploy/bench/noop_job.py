"""The process bench's baseline: Spark reading the same Kafka topic with the job's own session and source
(``processing.job.build_session`` and ``kafka_source``: same settings, connector, trigger and offsets
per trigger) into the ``noop`` sink, which reads every record and keeps nothing. What it costs is what
Spark and Kafka cost before any of the job's parsing, state or writes.

Run as ``python -m deploy.bench.noop_job`` with the job's ``TSDEMO_*`` variables plus
``TSDEMO_PROGRESS_PATH``: each micro-batch's progress (Spark's JSON) is appended there as a line.
Stops on SIGTERM.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import Field

from processing.settings import ProcessingSettings
from servicekit.service import setup_logging, stop_on_signals


class NoopJobSettings(ProcessingSettings):
    progress_path: Path = Field(description="JSON lines file each micro-batch's progress is appended to")


def main() -> int:
    from processing.job import ProgressMonitor, build_session, kafka_source

    settings = NoopJobSettings()  # type: ignore[call-arg]  (from TSDEMO_* variables, as the job's container)
    setup_logging(settings.log_level)
    stop = stop_on_signals()
    spark = build_session(settings)
    settings.progress_path.parent.mkdir(parents=True, exist_ok=True)
    out = open(settings.progress_path, "a", encoding="utf-8")  # noqa: SIM115 (closed at the end)

    monitor = ProgressMonitor()  # as the job watches its own queries, so both pay the same

    def save_progress() -> None:
        for progress in monitor.new_progress("noop", query):
            out.write(" ".join(progress.json.split()) + "\n")
        out.flush()

    query = (
        kafka_source(spark, settings).writeStream.queryName("noop").format("noop")
        .option("checkpointLocation", str(settings.checkpoint_dir / "noop"))
        .trigger(processingTime=settings.trigger)
        .start()
    )
    status = 0
    while not stop.is_set():
        save_progress()
        if not query.isActive:
            print(f"noop query stopped: {query.exception()}", file=sys.stderr)
            status = 1
            break
        stop.wait(0.5)
    query.stop()
    save_progress()  # the batches that finished while stopping
    spark.stop()
    out.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
