#!/bin/sh
# docker compose's credentials step (the one-shot `credentials-init` service, before the broker starts).
#
# Each credential comes from the git-ignored env file credentials.env beside compose.yaml when it is set
# there (credentials.env.example lists them); otherwise it is generated at first start and kept in the
# `credentials` volume, which only this step mounts. Each service then gets only its own, in a volume of its
# own, readable by its user only: the bridge's and the fleet simulator's MQTT passwords, Grafana's admin
# password (Grafana and dashboards-init). Last, mosquitto/mqtt-auth.sh writes the broker's password file
# (hashed) and ACL file from them. Nothing here is ever printed.
#
# Every path comes from the environment (compose.yaml sets them) so tests/e2e/test_compose_wiring.py can run
# this very script with the volumes mapped to directories.
set -eu
umask 077

: "${CREDENTIALS_DIR:?}" "${INGEST_SECRETS_DIR:?}" "${GENERATOR_SECRETS_DIR:?}" "${GRAFANA_SECRETS_DIR:?}"
service_uid=${SERVICE_UID:-10001}
grafana_uid=${GRAFANA_UID:-472}

die() {
  echo "credentials-init: $*" >&2
  exit 1
}

random_password() {
  head -c 24 /dev/urandom | base64 | tr -d '\n/+='
}

# keep NAME VALUE: $CREDENTIALS_DIR/NAME holds VALUE when given, else what it held, else a new random one.
keep() {
  target="$CREDENTIALS_DIR/$1"
  if [ -n "$2" ]; then
    printf '%s\n' "$2" >"$target.tmp"
    mv "$target.tmp" "$target"
  elif [ ! -s "$target" ]; then
    random_password >"$target.tmp"
    echo >>"$target.tmp"
    mv "$target.tmp" "$target"
    echo "credentials-init: generated $1 (kept in the credentials volume)"
  fi
}

# publish NAME DIR OWNER MODE: a copy of credential NAME for one service.
publish() {
  cp "$CREDENTIALS_DIR/$1" "$2/$1.tmp"
  chmod "$4" "$2/$1.tmp"
  if [ "$(id -u)" = 0 ]; then chown "$3" "$2/$1.tmp"; fi
  mv "$2/$1.tmp" "$2/$1"
}

mkdir -p "$CREDENTIALS_DIR" "$INGEST_SECRETS_DIR" "$GENERATOR_SECRETS_DIR" "$GRAFANA_SECRETS_DIR"
chmod 700 "$CREDENTIALS_DIR"
keep mqtt-bridge-password "${MQTT_BRIDGE_PASSWORD:-}"
keep mqtt-fleet-password "${MQTT_FLEET_PASSWORD:-}"
keep grafana-admin-password "${GRAFANA_ADMIN_PASSWORD:-}"
# Devices outside: "id:password id:password ..." (mqtt-auth.sh checks them).
printf '%s\n' "${MQTT_DEVICES:-}" >"$CREDENTIALS_DIR/mqtt-devices"

publish mqtt-bridge-password "$INGEST_SECRETS_DIR" "$service_uid:$service_uid" 0400
publish mqtt-fleet-password "$GENERATOR_SECRETS_DIR" "$service_uid:$service_uid" 0400
# Grafana reads it, and dashboards-init (our user's group) signs in with it.
publish grafana-admin-password "$GRAFANA_SECRETS_DIR" "$grafana_uid:$service_uid" 0440

MQTT_BRIDGE_PASSWORD_FILE="$CREDENTIALS_DIR/mqtt-bridge-password" \
MQTT_FLEET_PASSWORD_FILE="$CREDENTIALS_DIR/mqtt-fleet-password" \
MQTT_DEVICES_FILE="$CREDENTIALS_DIR/mqtt-devices" \
  exec sh "$(dirname "$0")/mosquitto/mqtt-auth.sh"
