#!/bin/bash
# The processing image's entrypoint.
#  - `driver ...` / `executor ...`: the contract of Spark's own Kubernetes images, which the Spark Operator's
#    driver and executor pods invoke (Spark's resource-managers/kubernetes entrypoint.sh does the same).
#  - anything else: a `tsdemo` command, so `docker run IMAGE process --help` works like the other images.
set -euo pipefail

# Spark's scripts and the JVM want a name for the user; an arbitrary UID (OpenShift) has none.
if ! getent passwd "$(id -u)" >/dev/null 2>&1; then
  export USER="${SPARK_USER_NAME:-tsdemo}"
fi

spark_classpath="${SPARK_CLASSPATH:-}:${SPARK_HOME}/jars/*"
if [ -n "${SPARK_CONF_DIR:-}" ]; then
  spark_classpath="${SPARK_CONF_DIR}:${spark_classpath}"
fi

case "${1:-}" in
  driver)
    shift
    exec "${SPARK_HOME}/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
      --deploy-mode client \
      "$@"
    ;;
  executor)
    shift
    # Spark passes executor JVM options as SPARK_JAVA_OPT_0, _1, ... in order.
    mapfile -t java_opts < <(env | grep '^SPARK_JAVA_OPT_' | sort -t_ -k4 -n | sed 's/^[^=]*=//')
    exec "${JAVA_HOME}/bin/java" "${java_opts[@]}" \
      "-Xms${SPARK_EXECUTOR_MEMORY}" "-Xmx${SPARK_EXECUTOR_MEMORY}" \
      -cp "${spark_classpath}" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "${SPARK_DRIVER_URL}" \
      --executor-id "${SPARK_EXECUTOR_ID}" \
      --cores "${SPARK_EXECUTOR_CORES}" \
      --app-id "${SPARK_APPLICATION_ID}" \
      --hostname "${SPARK_EXECUTOR_POD_IP}" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID}" \
      --podName "${SPARK_EXECUTOR_POD_NAME}"
    ;;
  *)
    exec tsdemo "$@"
    ;;
esac
