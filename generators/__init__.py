"""Sensor fleet simulator: builds a reproducible fleet and publishes its readings over MQTT."""
