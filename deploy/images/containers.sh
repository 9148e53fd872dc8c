#!/usr/bin/env bash
# `make test-containers`: builds every image of deploy/images on a real Docker engine and runs them with
# testcontainers (tests/containers, the `containers` marker). Steps, each also a subcommand for a rerun:
#   engine    use the engine that answers (DOCKER_HOST, else the default socket); where none does and we are
#             root on Debian/Ubuntu, install docker.io and start a private dockerd whose image store lives in
#             .cache/docker (so base images and layers survive between runs), stopped by its pid at the end.
#             A user's own engine is never started, stopped or reconfigured.
#   bases     the pinned base images (deploy/compose/.env) where they can be pulled; where not, stand-ins made
#             from this machine's Debian packages (mmdebstrap) and JDK, said so in the log.
#   build     the five images, tagged tsdemo/<name>:<TSDEMO_TAG>, from a slim context (the files git knows).
#   standins  the compose file's third-party servers made from Debian packages and Maven artifacts
#             (deploy/images/standins, for deploy/compose/compose.standins.yaml).
#   test      pytest -m containers [pytest args].
#   labs      `make test-labs`: the workshop labs (tests/labs), with an engine where one answers or can be started
#             as above, so that lab 8's docker steps run too; without one (not root, or not Debian), the labs
#             still run and those steps show as skipped.
# Usage: deploy/images/containers.sh [all|bases|build|standins|test|labs|engine-run CMD...] (default: all).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
# Resolved: runc refuses a container rootfs under a symlink (a worktree's .cache often is one).
CACHE=$(realpath -m "${TSDEMO_CACHE_DIR:-$REPO/.cache}")
PY=${PY:-$REPO/.venv/bin/python}
ENV_FILE=deploy/compose/.env
# The stand-in bases: what goes into them, and tags with a hash of it (a cached one is never a stale one).
PYTHON_PACKAGES=python3,python3-venv,python-is-python3,ca-certificates
# Spark and Kafka need java.se plus these JDK modules (Unsafe, JMX, EC crypto, zipfs, DNS, Kerberos/SASL;
# Spark 4 starts its JVM with --add-modules=jdk.incubator.vector).
JRE_MODULES=java.se,jdk.unsupported,jdk.management,jdk.management.agent,jdk.crypto.ec,jdk.crypto.cryptoki,jdk.zipfs,jdk.naming.dns,jdk.security.auth,jdk.security.jgss,jdk.charsets,jdk.localedata,jdk.net,jdk.jfr,jdk.httpserver,jdk.incubator.vector
recipe() { printf '%s' "$*" | sha256sum | cut -c1-8; }
STANDIN_PYTHON=tsdemo-standin/python:3.11-bookworm-$(recipe "mmdebstrap minbase merged-usr $PYTHON_PACKAGES")
STANDIN_JRE=tsdemo-standin/jre:17-bookworm-$(recipe "$JRE_MODULES")
IMAGES=(generator ingest storage-init dashboards-init processing)

log() { printf '%s containers: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
pin() { sed -n "s/^$1=//p" "$ENV_FILE"; }
export TSDEMO_TAG=${TSDEMO_TAG:-$(pin TSDEMO_TAG)}
export TSDEMO_REGISTRY=${TSDEMO_REGISTRY:-$(pin TSDEMO_REGISTRY)}

# -- engine ----------------------------------------------------------------------------------------------
engine_answers() { timeout 20 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
may_start_engine() { [ "$(id -u)" = 0 ] && grep -qiE '^ID(_LIKE)?=.*(debian|ubuntu)' /etc/os-release; }

# Runs "$@" with DOCKER_HOST pointing at an engine that answers, starting a private one if needed.
engine_run() {
  if [ -n "${DOCKER_HOST:-}" ]; then
    engine_answers || { log "DOCKER_HOST=$DOCKER_HOST does not answer"; return 1; }
    log "using the engine at DOCKER_HOST ($(docker version --format 'Docker {{.Server.Version}}'))"
    "$@"; return
  fi
  if engine_answers; then
    log "using the engine on the default socket ($(docker version --format 'Docker {{.Server.Version}}'))"
    "$@"; return
  fi
  if ! may_start_engine; then
    log "no Docker engine answers (DOCKER_HOST unset, nothing on the default socket) and a private one is"
    log "only started as root on Debian/Ubuntu: start your engine or set DOCKER_HOST, then rerun"
    return 1
  fi
  if ! command -v dockerd >/dev/null; then
    log "no engine and no dockerd: installing Debian's docker.io"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >/dev/null \
      || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
           DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >/dev/null; }
  fi
  local home=$CACHE/docker
  mkdir -p "$home"
  # One private engine per image store: a second run waits for the first instead of sharing its data-root.
  exec 9>"$home/lock"
  if ! flock -n 9; then
    log "another run holds the private engine ($home/lock); waiting for it"
    flock -w 1800 9
  fi
  # Sockets need a short path; the exec-root holds only runtime state (containerd's sockets, pid files).
  local run; run=$(mktemp -d /tmp/tsdemo-dockerd.XXXXXX)
  log "starting a private dockerd (image store $home/data, log $home/dockerd.log)"
  dockerd --data-root "$home/data" --exec-root "$run/exec" --pidfile "$run/dockerd.pid" \
    --host "unix://$run/docker.sock" >"$home/dockerd.log" 2>&1 &
  local pid=$!
  export DOCKER_HOST=unix://$run/docker.sock
  # shellcheck disable=SC2064  # the pid and folder are fixed now
  trap "engine_stop $pid '$run'" EXIT
  trap 'exit 130' INT; trap 'exit 143' TERM  # so the EXIT trap runs on Ctrl-C and kill too
  local i
  for i in $(seq 1 60); do
    engine_answers && break
    kill -0 "$pid" 2>/dev/null || { log "dockerd exited; end of its log:"; tail -20 "$home/dockerd.log" >&2; return 1; }
    sleep 1
  done
  engine_answers || { log "dockerd did not answer within 60 s"; tail -20 "$home/dockerd.log" >&2; return 1; }
  log "private dockerd $pid answers at $DOCKER_HOST ($(docker version --format 'Docker {{.Server.Version}}'))"
  "$@"
}

engine_stop() {  # pid run-dir: the private dockerd only, by its pid (its containerd exits with it)
  local pid=$1 run=$2 i
  kill -0 "$pid" 2>/dev/null || return 0
  # Our own engine only: nothing of this run may come back at its next start (compose's restart policies),
  # and replaced images would pile up in .cache/docker; tagged images and their layers stay cached.
  local left; left=$(docker ps -aq 2>/dev/null || true)
  [ -z "$left" ] || docker rm -f $left >/dev/null 2>&1 || true
  docker image prune -f >/dev/null 2>&1 || true
  log "stopping the private dockerd $pid"
  kill -TERM "$pid"
  for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -0 "$pid" 2>/dev/null && { log "dockerd $pid ignored SIGTERM for 60 s: SIGKILL"; kill -KILL "$pid"; }
  # dockerd leaves its default network namespace bind-mounted in the exec-root.
  local m; for m in "$run"/exec/netns/*; do [ -e "$m" ] && umount "$m" 2>/dev/null; done
  rm -rf "$run" 2>/dev/null || log "could not remove $run entirely (a busy mount)"
  return 0
}

# -- bases ------------------------------------------------------------------------------------------------
have_image() { docker image inspect "$1" >/dev/null 2>&1; }

pullable() {  # image: present, or pulled now (Docker Hub may be unreachable: give up after 60 s)
  have_image "$1" && return 0
  timeout 60 docker pull -q "$1" >/dev/null 2>&1
}

debian_mirror() {  # the machine's own Debian mirror, from its apt sources
  { sed -n 's/^URIs: *\([^ ]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null
    sed -n 's/^deb  *\(\[[^]]*\] *\)\{0,1\}\([^ ]*\) .*/\2/p' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
  } | grep -v -- '-security' | head -1 || true
}

standin_python() {
  have_image "$STANDIN_PYTHON" && return 0
  command -v mmdebstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap >/dev/null
  local mirror; mirror=$(debian_mirror)
  [ -n "$mirror" ] || { log "no Debian mirror in this machine's apt sources"; return 1; }
  log "making $STANDIN_PYTHON with mmdebstrap (bookworm minbase + python3, from the machine's mirror)"
  # mmdebstrap, not debootstrap: apt and dpkg do the work (1 min here at load 4-9; debootstrap took 4.5 min
  # at load 15). Merged /usr by its hook, not the usrmerge package (which brings perl); lean like a -slim image: no
  # docs, man pages or translations, and mmdebstrap leaves no package lists or .debs behind.
  local tarball; tarball=$(mktemp /tmp/tsdemo-rootfs.XXXXXX.tar)
  mmdebstrap --variant=minbase --include="$PYTHON_PACKAGES" --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$tarball" "$mirror" >"$CACHE/docker/mmdebstrap.log" 2>&1 \
    || { tail -20 "$CACHE/docker/mmdebstrap.log" >&2; rm -f "$tarball"; return 1; }
  docker import -c 'CMD ["python3"]' -c 'ENV LANG=C.UTF-8' "$tarball" "$STANDIN_PYTHON" >/dev/null
  rm -f "$tarball"
}

standin_jre() {  # a jlink-made JRE from the machine's JDK 17, at Temurin's path (/opt/java/openjdk)
  have_image "$STANDIN_JRE" && return 0
  local jdk root
  jdk=$(dirname "$(dirname "$(readlink -f "$(command -v javac || command -v jlink)")")")
  [ -x "$jdk/bin/jlink" ] && [ -d "$jdk/jmods" ] || { log "no JDK with jlink and jmods on this machine"; return 1; }
  root=$(mktemp -d /tmp/tsdemo-jre.XXXXXX)
  log "making $STANDIN_JRE with jlink from $jdk"
  "$jdk/bin/jlink" --add-modules "$JRE_MODULES" \
    --strip-debug --no-header-files --no-man-pages --compress=2 --output "$root/opt/java/openjdk"
  tar -C "$root" -c . | docker import -c 'ENV JAVA_HOME=/opt/java/openjdk' - "$STANDIN_JRE" >/dev/null
  rm -rf "$root"
}

# Sets PYTHON_IMAGE and JRE_IMAGE to the pins, or to stand-ins where a pin cannot be pulled.
bases() {
  [ -z "${BASES_DONE:-}" ] || return 0
  PYTHON_IMAGE=$(pin PYTHON_IMAGE); JRE_IMAGE=$(pin JRE_IMAGE)
  local making=()
  if pullable "$PYTHON_IMAGE"; then
    log "base $PYTHON_IMAGE: the real one"
  else
    log "base $PYTHON_IMAGE cannot be pulled: building on the stand-in $STANDIN_PYTHON (Debian's Python 3.11)"
    PYTHON_IMAGE=$STANDIN_PYTHON; standin_python & making+=($!)
  fi
  if pullable "$JRE_IMAGE"; then
    log "base $JRE_IMAGE: the real one"
  else
    log "base $JRE_IMAGE cannot be pulled: building on the stand-in $STANDIN_JRE (jlink of the machine's JDK)"
    JRE_IMAGE=$STANDIN_JRE; standin_jre & making+=($!)
  fi
  # mmdebstrap mostly waits on the mirror and jlink on the CPU: side by side.
  local pid; for pid in "${making[@]}"; do wait "$pid"; done
  export PYTHON_IMAGE JRE_IMAGE BASES_DONE=1
}

# docker_build NAME ARGS...: the legacy builder (BuildKit would fetch the Dockerfile's `# syntax=` frontend
# from Docker Hub), host network (so pip and apt reach what the machine reaches); the log in .cache/docker.
docker_build() {
  local name=$1 out=$CACHE/docker/build-$1.log; shift
  mkdir -p "$CACHE/docker"
  if ! DOCKER_BUILDKIT=0 docker build --network host "$@" >"$out" 2>&1; then
    log "building $name failed; end of $out:"; tail -25 "$out" >&2; return 1
  fi
}

# -- build ------------------------------------------------------------------------------------------------
# pyspark is a source archive on PyPI: its wheel, built once by this machine's pip (or taken from its cache, as
# `make setup` left it), kept in .cache/docker/wheels and copied into DIR. Without one the image builds it.
pyspark_wheel() {
  local dir=$CACHE/docker/wheels version; version=$(pin SPARK_VERSION)
  if ! compgen -G "$dir/pyspark-$version-*.whl" >/dev/null; then
    log "pyspark $version's wheel for the processing build (pip wheel, from this machine's pip cache if there)"
    "$PY" -m pip wheel -q --no-deps "pyspark==$version" -w "$dir" >&2 || { log "no pyspark wheel: the build makes one"; return 0; }
  fi
  cp "$dir"/pyspark-"$version"-*.whl "$1"/
}

build() {
  bases
  local ctx; ctx=$(mktemp -d /tmp/tsdemo-context.XXXXXX)
  # The legacy builder ignores Dockerfile.dockerignore, so the context is the working tree as git sees it
  # (tracked files with their edits, new files it does not ignore), never .venv or .cache.
  git ls-files -z --cached --modified --others --exclude-standard --deduplicate \
    | grep -zZ -E '^(pyproject.toml|README.md|servicekit/|generators/|ingest/|processing/|storage/|dashboards/|deploy/)' \
    | xargs -0 -I{} sh -c 'test -e "{}" && printf "%s\0" "{}"' \
    | tar --null -T - -c | tar -C "$ctx" -x
  # pip and Ivy behind this machine's TLS-inspecting proxy or private index: its own settings, build stages only.
  "$PY" deploy/images/build_settings.py "$ctx/deploy/images/build-settings" >&2
  local args=(--build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" --build-arg "JRE_IMAGE=$JRE_IMAGE")
  local name start
  for name in "${IMAGES[@]}"; do
    start=$SECONDS
    # processing (the last): pyspark's wheel from this machine's pip cache, in the context of this build only.
    [ "$name" != processing ] || pyspark_wheel "$ctx/deploy/images/wheels"
    docker_build "$name" -f "$ctx/deploy/images/Dockerfile" --target "$name" \
      -t "$TSDEMO_REGISTRY/$name:$TSDEMO_TAG" "${args[@]}" "$ctx" || { rm -rf "$ctx"; return 1; }
    log "built $TSDEMO_REGISTRY/$name:$TSDEMO_TAG in $((SECONDS - start)) s: $(size_of "$TSDEMO_REGISTRY/$name:$TSDEMO_TAG")"
  done
  rm -rf "$ctx"
}

# The compose file's third-party servers, where their pinned images cannot be pulled (deploy/compose/.env):
# stand-ins for compose.standins.yaml, built on the Debian stand-in base. Grafana has none.
STANDIN_SERVERS=(mosquitto influxdb kafka)
standins() {
  local server pinned ctx start
  for server in "${STANDIN_SERVERS[@]}"; do
    pinned=$(pin "${server^^}_IMAGE")
    if pullable "$pinned"; then
      log "server $pinned: the real one is here too (tests/containers/test_compose.py then runs without the stand-ins)"
    fi
  done
  log "server $(pin GRAFANA_IMAGE): no stand-in (Grafana is not packaged for Debian), left out of compose by compose.standins.yaml"
  standin_python; standin_jre
  ctx=$(mktemp -d /tmp/tsdemo-standins.XXXXXX)
  PYTHONPATH=$REPO "$PY" deploy/images/standins/kafka_dist.py "$ctx" >&2
  # Built every time: the layer cache makes an unchanged one take seconds, and a changed recipe is never stale.
  for server in "${STANDIN_SERVERS[@]}"; do
    start=$SECONDS
    docker_build "standin-$server" -f deploy/images/standins/standins.Dockerfile \
      --build-arg "BASE_IMAGE=$STANDIN_PYTHON" --build-arg "JRE_IMAGE=$STANDIN_JRE" \
      --target "$server" -t "tsdemo-standin/$server:latest" "$ctx" || { rm -rf "$ctx"; return 1; }
    log "built stand-in tsdemo-standin/$server:latest for $(pin "${server^^}_IMAGE") in $((SECONDS - start)) s: $(size_of "tsdemo-standin/$server:latest")"
  done
  rm -rf "$ctx"
}

size_of() { docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1/1e6}'; }

# -rP: the output of passed tests too (the verify reports, timings, what compose left out).
# The compose run and the other tests side by side: both spend much of their time waiting on healthchecks
# and Spark's start, and each session has servers and ports of its own.
test_images() {
  local out=$CACHE/docker/test-compose.log compose status=0
  log "tests: tests/containers/test_compose.py in the background (its output: $out, shown at the end)"
  "$PY" -m pytest -m containers tests/containers/test_compose.py -p no:cacheprovider -rP "$@" >"$out" 2>&1 &
  compose=$!
  "$PY" -m pytest -m containers tests/containers --ignore=tests/containers/test_compose.py -rP "$@" || status=$?
  wait "$compose" || status=$?
  log "tests/containers/test_compose.py:"; cat "$out"
  return "$status"
}

# The stand-ins (apt, another Dockerfile) build beside our images (pip); the images one after another, as the
# legacy builder runs every stage before a target and parallel builds would repeat the shared ones.
all() {
  bases
  local standins_pid status=0
  standins & standins_pid=$!
  build || status=$?
  wait "$standins_pid" || status=$?
  [ "$status" = 0 ] || return "$status"
  test_images "$@"
}

labs() { "$PY" -m pytest -m labs tests/labs -rs "$@"; }

cmd=${1:-all}; shift || true
case "$cmd" in
  all) engine_run all "$@" ;;
  bases) engine_run bases ;;
  build) engine_run build ;;
  standins) engine_run standins ;;
  test) engine_run test_images "$@" ;;
  labs)
    if [ -n "${DOCKER_HOST:-}" ] || engine_answers || may_start_engine; then engine_run labs "$@"
    else log "no Docker engine answers and none can be started here: the labs run without lab 8's docker steps"
         labs "$@"; fi ;;
  engine-run) engine_run "$@" ;;
  *) echo "usage: $0 [all|bases|build|standins|test|labs|engine-run CMD...]" >&2; exit 2 ;;
esac
