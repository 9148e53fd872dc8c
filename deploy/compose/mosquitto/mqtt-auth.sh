#!/bin/sh
# Writes what deploy/compose/mosquitto/mosquitto.conf reads from /mosquitto/auth: the password file, the ACL
# file and the drop-ins of conf.d/. It runs before every broker start, from credentials kept outside the
# repository: a git-ignored env file (docker compose, through ../credentials-init.sh), Secrets (Kubernetes,
# the broker pod's init container), a test's temporary files (deploy/servers/mqtt_security.py). Compose,
# Kubernetes and the local tests all run this script and that one config file.
#
# Roles, by MQTT username:
#   the bridge (MQTT_BRIDGE_USER, tsdemo-bridge)  may only subscribe: read sensors/#, shared subscriptions too
#   the fleet simulator (MQTT_FLEET_USER, tsdemo-fleet)  may only publish under sensors/
#   every other user is a device: it may publish only to sensors/<site>/<its username>
#   tsdemo-health (a new random password each start, readable by the broker's user only) may read
#     $SYS/broker/version: the health checks (`XDG_CONFIG_HOME=/mosquitto/auth/health mosquitto_sub ...`)
#
# Environment:
#   MQTT_AUTH_DIR                 where to write (default /mosquitto/auth)
#   MQTT_BRIDGE_PASSWORD_FILE     file holding the bridge's password
#   MQTT_FLEET_PASSWORD_FILE      file holding the fleet simulator's password
#   MQTT_DEVICES_FILE             optional: "<device_id>:<password>" per device, separated by spaces or lines
#   MQTT_TLS_DIR                  optional: ca.crt, tls.crt and tls.key (cert-manager's names) there add a TLS
#                                 listener on MQTT_TLS_PORT (8883, on MQTT_TLS_BIND_ADDRESS) with the same
#                                 users and ACLs; MQTT_TLS_REQUIRE_CERTIFICATE=true also asks clients for a
#                                 certificate the CA signed
#   MQTT_ALLOW_ANONYMOUS_DEMO     "true": the named demo opt-in; clients without credentials may publish and
#                                 subscribe anywhere (the bridge and fleet passwords are then optional)
#   MOSQUITTO_UID, MOSQUITTO_GID  when run as root: the broker's user, made owner of what it reads
set -eu
umask 077

auth_dir=${MQTT_AUTH_DIR:-/mosquitto/auth}
bridge_user=${MQTT_BRIDGE_USER:-tsdemo-bridge}
fleet_user=${MQTT_FLEET_USER:-tsdemo-fleet}
health_user=tsdemo-health
anonymous=${MQTT_ALLOW_ANONYMOUS_DEMO:-false}
min_length=12

die() {
  echo "mqtt-auth: $*" >&2
  exit 1
}

case $anonymous in
  true | false) ;;
  *) die "MQTT_ALLOW_ANONYMOUS_DEMO must be true or false, not '$anonymous'" ;;
esac

# check_user NAME: a username the ACL patterns and the password file can hold.
check_user() {
  case $1 in
    "" | *[!A-Za-z0-9._-]*) die "bad MQTT username '$1' (letters, digits, '.', '_', '-' only)" ;;
  esac
}

# check_password USER PASSWORD: no placeholders, no short ones.
check_password() {
  case $2 in
    CHANGE_ME | changeme | admin | password) die "the MQTT password of '$1' is the placeholder '$2'; set a real one" ;;
  esac
  [ "${#2}" -ge "$min_length" ] || die "the MQTT password of '$1' is shorter than $min_length characters"
}

# password_line USER FILE: "USER:PASSWORD" from FILE (its last newline dropped).
password_line() {
  [ -n "$2" ] || die "no password file for '$1' (set its *_PASSWORD_FILE, or MQTT_ALLOW_ANONYMOUS_DEMO=true)"
  [ -r "$2" ] || die "cannot read the password file of '$1': $2"
  [ "$(wc -l <"$2")" -le 1 ] || die "the password file of '$1' has more than one line: $2"
  pw=$(cat "$2")
  check_password "$1" "$pw"
  printf '%s:%s\n' "$1" "$pw"
}

random_password() {
  head -c 24 /dev/urandom | base64 | tr -d '\n/+='
}

# write_tls: the broker's own copy of the certificate and key (readable by its user whatever the source's
# owner), and a TLS listener that uses them.
write_tls() {
  mkdir -p "$auth_dir/tls"
  for f in ca.crt tls.crt tls.key; do
    [ -r "$MQTT_TLS_DIR/$f" ] || die "MQTT_TLS_DIR $MQTT_TLS_DIR has no readable $f"
    cp "$MQTT_TLS_DIR/$f" "$auth_dir/tls/$f"
  done
  cat >"$auth_dir/conf.d/tls.conf" <<EOF
# MQTT over TLS: the same users and ACLs as the plain listener.
listener ${MQTT_TLS_PORT:-8883} ${MQTT_TLS_BIND_ADDRESS:-}
cafile $auth_dir/tls/ca.crt
certfile $auth_dir/tls/tls.crt
keyfile $auth_dir/tls/tls.key
tls_version tlsv1.2
EOF
  case ${MQTT_TLS_REQUIRE_CERTIFICATE:-false} in
    true) echo "require_certificate true" >>"$auth_dir/conf.d/tls.conf" ;;
    false) ;;
    *) die "MQTT_TLS_REQUIRE_CERTIFICATE must be true or false" ;;
  esac
}

owned_by_broker() {
  if [ "$(id -u)" = 0 ] && [ -n "${MOSQUITTO_UID:-}" ]; then
    chown -R "$MOSQUITTO_UID:${MOSQUITTO_GID:-$MOSQUITTO_UID}" "$auth_dir"
  fi
}

# "mqtt-auth.sh tls": only the TLS listener, added after a run without it (compose's `tls` profile).
if [ "${1:-}" = tls ]; then
  [ -n "${MQTT_TLS_DIR:-}" ] || die "the tls step needs MQTT_TLS_DIR"
  [ -d "$auth_dir/conf.d" ] || die "$auth_dir/conf.d is missing: run mqtt-auth.sh without arguments first"
  write_tls
  owned_by_broker
  echo "mqtt-auth: TLS listener on ${MQTT_TLS_PORT:-8883} added in $auth_dir"
  exit 0
fi

check_user "$bridge_user"
check_user "$fleet_user"
mkdir -p "$auth_dir/conf.d" "$auth_dir/health"
rm -rf "$auth_dir"/conf.d/*.conf "$auth_dir"/*.tmp "$auth_dir/tls"

plain="$auth_dir/passwd.tmp"
: >"$plain"
if [ "$anonymous" = false ] || [ -n "${MQTT_BRIDGE_PASSWORD_FILE:-}" ]; then
  password_line "$bridge_user" "${MQTT_BRIDGE_PASSWORD_FILE:-}" >>"$plain"
fi
if [ "$anonymous" = false ] || [ -n "${MQTT_FLEET_PASSWORD_FILE:-}" ]; then
  password_line "$fleet_user" "${MQTT_FLEET_PASSWORD_FILE:-}" >>"$plain"
fi
devices=0
if [ -n "${MQTT_DEVICES_FILE:-}" ]; then
  [ -r "$MQTT_DEVICES_FILE" ] || die "cannot read MQTT_DEVICES_FILE $MQTT_DEVICES_FILE"
  set -f  # a "*" in a password is no glob
  for entry in $(cat "$MQTT_DEVICES_FILE"); do
    user=${entry%%:*}
    [ "$user" != "$entry" ] || die "an entry of MQTT_DEVICES_FILE is not <device_id>:<password>"
    check_user "$user"
    case $user in "$bridge_user" | "$fleet_user" | "$health_user") die "device id '$user' is a service's username" ;; esac
    check_password "$user" "${entry#*:}"
    printf '%s\n' "$entry" >>"$plain"
    devices=$((devices + 1))
  done
  set +f
fi
health_password=$(random_password)
printf '%s:%s\n' "$health_user" "$health_password" >>"$plain"
# -U hashes a file of "user:password" lines in place (PBKDF2-SHA512): nothing in clear reaches the broker.
"${MOSQUITTO_PASSWD:-mosquitto_passwd}" -U "$plain" >/dev/null || die "mosquitto_passwd failed"

acl="$auth_dir/acl.tmp"
{
  echo "# written by mqtt-auth.sh at start; edits are lost"
  if [ "$anonymous" = true ]; then
    echo "# MQTT_ALLOW_ANONYMOUS_DEMO=true: clients without credentials may do anything"
    echo "topic readwrite #"
    echo "topic read \$SYS/#"
  fi
  echo
  echo "# the bridge only subscribes"
  echo "user $bridge_user"
  echo "topic read sensors/#"
  echo
  echo "# the fleet simulator (one connection for many devices) only publishes"
  echo "user $fleet_user"
  echo "topic write sensors/#"
  echo
  echo "user $health_user"
  echo "topic read \$SYS/broker/version"
  echo
  echo "# every other user is a device: only its own topic (username = device_id)"
  echo "pattern write sensors/+/%u"
} >"$acl"

# mosquitto_sub reads $XDG_CONFIG_HOME/mosquitto_sub: the health checks' credentials, off the command line.
printf -- '-u %s\n-P %s\n' "$health_user" "$health_password" >"$auth_dir/health/mosquitto_sub.tmp"

if [ "$anonymous" = true ]; then
  cat >"$auth_dir/conf.d/anonymous-demo.conf" <<'EOF'
# MQTT_ALLOW_ANONYMOUS_DEMO=true: the named demo opt-in. Clients without credentials are accepted.
allow_anonymous true
EOF
fi

if [ -n "${MQTT_TLS_DIR:-}" ]; then write_tls; fi

owned_by_broker
mv "$plain" "$auth_dir/passwd"
mv "$acl" "$auth_dir/acl"
mv "$auth_dir/health/mosquitto_sub.tmp" "$auth_dir/health/mosquitto_sub"
echo "mqtt-auth: wrote $auth_dir: $((devices)) device(s), anonymous demo access $anonymous, TLS listener $([ -n "${MQTT_TLS_DIR:-}" ] && echo on || echo off)"
