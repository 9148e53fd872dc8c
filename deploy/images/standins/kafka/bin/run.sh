#!/bin/bash
# The Kafka stand-in's entrypoint, configured like the official apache/kafka image: every KAFKA_<NAME>
# variable is the broker setting <name> (lower case, _ -> ., __ -> _, ___ -> -), CLUSTER_ID formats the
# log directory on first start. One KRaft node; see deploy/compose/compose.yaml.
set -euo pipefail
config=/opt/kafka/config/server.properties
: >"$config"
while IFS='=' read -r name value; do
  case "$name" in
    KAFKA_HEAP_OPTS|KAFKA_OPTS|KAFKA_JVM_PERFORMANCE_OPTS|KAFKA_LOG4J_CONFIG|KAFKA_TOOL_HEAP_OPTS|KAFKA_VERSION) continue ;;
  esac
  key=${name#KAFKA_}
  key=${key//___/-}; key=${key//__/@}; key=${key//_/.}; key=${key//@/_}
  printf '%s=%s\n' "${key,,}" "$value" >>"$config"
done < <(env | grep '^KAFKA_' | sort)
: "${CLUSTER_ID:?set CLUSTER_ID (kafka-storage.sh random-uuid makes one)}"
logdirs=$(sed -n 's/^log\.dirs=//p' "$config")
if [ ! -f "${logdirs%%,*}/meta.properties" ]; then
  /opt/kafka/bin/kafka-run-class.sh kafka.tools.StorageTool format -t "$CLUSTER_ID" -c "$config" --ignore-formatted
fi
exec /opt/kafka/bin/kafka-run-class.sh -Dlog4j2.shutdownHookEnabled=false kafka.Kafka "$config"
