#!/bin/bash
# A short-lived client (the healthcheck, kafka-init): a JVM tuned to start fast, not to run long.
KAFKA_JVM_PERFORMANCE_OPTS=${KAFKA_TOOL_JVM_OPTS:--XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:-UsePerfData} \
KAFKA_HEAP_OPTS=${KAFKA_TOOL_HEAP_OPTS:--Xmx128m} exec /opt/kafka/bin/kafka-run-class.sh org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
