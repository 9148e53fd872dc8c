# Stand-ins for the third-party server images of deploy/compose/compose.yaml, for machines that cannot pull
# them (no Docker Hub): made from this machine's Debian packages and the project's Maven artifacts, one
# target each. deploy/images/containers.sh builds them; deploy/compose/compose.standins.yaml uses them.
#   mosquitto  Debian's mosquitto (2.0.11) for eclipse-mosquitto   (user 1883, /mosquitto/{config,data})
#   influxdb   Debian's influxdb (1.6.7) for influxdb:1.11         (user influxdb, /var/lib/influxdb)
#   kafka      Kafka from Maven Central for apache/kafka           (user 1000, /opt/kafka, KAFKA_* settings)
# The context is the folder kafka_dist.py lays out (libs/, bin/, config/).
# Both set by containers.sh to its stand-in bases (their tags carry a hash of their recipe).
ARG BASE_IMAGE=tsdemo-standin/python:3.11-bookworm
ARG JRE_IMAGE=tsdemo-standin/jre:17-bookworm

FROM ${JRE_IMAGE} AS jre

# Unpinned on purpose (DL3008): a stand-in takes what this machine's Debian release has, security updates included.
FROM ${BASE_IMAGE} AS mosquitto
# hadolint ignore=DL3008
RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mosquitto mosquitto-clients \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /mosquitto/config /mosquitto/data /mosquitto/log \
    && chown -R 1883:1883 /mosquitto
USER 1883:1883
EXPOSE 1883
CMD ["/usr/sbin/mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]

FROM ${BASE_IMAGE} AS influxdb
# influxdb-client: the `influx` shell the compose healthcheck runs.
# hadolint ignore=DL3008
RUN apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends influxdb influxdb-client \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/influxdb && chown influxdb:influxdb /var/lib/influxdb
# Debian's config keeps data in /var/lib/influxdb; INFLUXDB_* variables override it, as in the official image.
# The package's system user has no fixed uid (DL3066), as the official image's user has none either.
# hadolint ignore=DL3066
USER influxdb
EXPOSE 8086
CMD ["influxd", "-config", "/etc/influxdb/influxdb.conf"]

FROM ${BASE_IMAGE} AS kafka
COPY --from=jre /opt/java/openjdk /opt/java/openjdk
ENV JAVA_HOME=/opt/java/openjdk PATH=/opt/java/openjdk/bin:$PATH
RUN useradd --uid 1000 --user-group --home-dir /opt/kafka --no-create-home --shell /usr/sbin/nologin appuser \
    && mkdir -p /var/lib/kafka/data /opt/kafka/config \
    && chown appuser:appuser /var/lib/kafka/data /opt/kafka/config
COPY libs/ /opt/kafka/libs/
COPY bin/ /opt/kafka/bin/
COPY --chown=appuser:appuser config/ /opt/kafka/config/
USER 1000:1000
EXPOSE 9092 9093
CMD ["/opt/kafka/bin/run.sh"]
