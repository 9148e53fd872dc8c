"""MQTT to Kafka bridge: forwards payload bytes unchanged, acknowledging MQTT only after Kafka."""
