#!/bin/bash
# kafka-run-class.sh MAIN ARGS...: a Kafka main class on the stand-in's classpath (what Kafka's own script of
# this name does, without its many options): heap from KAFKA_HEAP_OPTS, logs to stderr from log4j2.xml.
set -euo pipefail
exec "${JAVA_HOME}/bin/java" ${KAFKA_HEAP_OPTS:--Xmx256m} ${KAFKA_JVM_PERFORMANCE_OPTS:-} ${KAFKA_OPTS:-} \
  -Djava.awt.headless=true "-Dlog4j2.configurationFile=${KAFKA_LOG4J_CONFIG:-/opt/kafka/config/log4j2.xml}" \
  -cp "/opt/kafka/libs/*" "$@"
