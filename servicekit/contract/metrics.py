"""Prometheus metric names the services export on ``/metrics``: one spelling for the exporter and for
every reader (the stage collector, ``tsdemo up``'s progress line, the bench, the tests).

Counters are named with their ``_total`` sample name; prometheus_client accepts that name and exposes
the same sample.
"""

from __future__ import annotations

# -- generator (generators.publisher) -------------------------------------------------------------
GENERATOR_MESSAGES_SENT = "tsdemo_generator_messages_sent_total"
GENERATOR_MESSAGES_ACKED = "tsdemo_generator_messages_acked_total"
#: readings counted once each when the broker acknowledged their first copy: the ``published`` stage
GENERATOR_READINGS_ACKED = "tsdemo_generator_readings_acked_total"
GENERATOR_MESSAGES_REFUSED = "tsdemo_generator_messages_refused_total"
GENERATOR_MESSAGES_INFLIGHT = "tsdemo_generator_messages_inflight"
GENERATOR_MESSAGES_RESENT = "tsdemo_generator_messages_resent_total"
GENERATOR_MESSAGES_UNROUTED = "tsdemo_generator_messages_unrouted_total"

# -- bridge (ingest.metrics) ----------------------------------------------------------------------
INGEST_RECEIVED = "tsdemo_ingest_received_total"
#: messages written to the readings topic and acknowledged by Kafka: the ``bridged`` stage
INGEST_FORWARDED = "tsdemo_ingest_forwarded_total"
#: messages written to the dead-letter topic, label ``reason``: the ``rejected`` stage
INGEST_REJECTED = "tsdemo_ingest_rejected_total"
INGEST_LEFT_FOR_REDELIVERY = "tsdemo_ingest_left_for_redelivery_total"
INGEST_KAFKA_ERRORS = "tsdemo_ingest_kafka_errors_total"
INGEST_INFLIGHT = "tsdemo_ingest_inflight"
INGEST_KAFKA_ACK_SECONDS = "tsdemo_ingest_kafka_ack_seconds"
INGEST_KAFKA_RECORDS_PER_REQUEST = "tsdemo_ingest_kafka_records_per_request"
INGEST_KAFKA_REQUEST_LATENCY_MS = "tsdemo_ingest_kafka_request_latency_ms"
INGEST_KAFKA_BATCH_BYTES = "tsdemo_ingest_kafka_batch_bytes"
INGEST_KAFKA_RECORD_QUEUE_MS = "tsdemo_ingest_kafka_record_queue_ms"
INGEST_KAFKA_COMPRESSION_RATE = "tsdemo_ingest_kafka_compression_rate"

# -- Spark job (processing.job, processing.sink) --------------------------------------------------
PROCESSING_BATCH_DURATION_MS = "tsdemo_processing_batch_duration_ms"
#: label ``query`` (``influx.PIPELINE_QUERY_WINDOWS``)
PROCESSING_INPUT_ROWS_PER_SECOND = "tsdemo_processing_input_rows_per_second"
PROCESSING_LATE_ROWS = "tsdemo_processing_late_rows_total"
#: readings the job added to the stored device windows: the ``stored`` stage
PROCESSING_READINGS_STORED = "tsdemo_processing_readings_stored_total"

# -- stage collector (storage.stages) -------------------------------------------------------------
#: label ``component``
STAGES_SCRAPE_ERRORS = "tsdemo_stages_scrape_errors_total"
STAGES_ROUNDS_WRITTEN = "tsdemo_stages_rounds_written_total"
