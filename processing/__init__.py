"""Spark Structured Streaming job: parse, validate, deduplicate and window readings into InfluxDB."""
