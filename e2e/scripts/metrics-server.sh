#!/usr/bin/env bash
# Builds (once per machine) the pinned metrics-server the QleetOS test environment runs
# against kwok's simulated resource metrics (the HorizontalPodAutoscaler trial) and prints
# the directory that holds bin/metrics-server. Cached outside the repository, keyed by
# version. v0.9.0 is built from the same k8s.io v0.36 libraries as the test clusters
# (v0.9.1 needs a newer Go than this machine's).
set -euo pipefail

METRICS_SERVER_VERSION="v0.9.0"
cache_root="${QLEETOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qleetos}"
target="$cache_root/metrics-server-$METRICS_SERVER_VERSION"

if [ -x "$target/bin/metrics-server" ]; then
  echo "$target"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "error: the Go toolchain is needed to build metrics-server (sigs.k8s.io/metrics-server $METRICS_SERVER_VERSION); install Go >= 1.26 and retry" >&2
  exit 1
fi

mkdir -p "$target"
staging="$(mktemp -d "$target/../build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
echo "building metrics-server $METRICS_SERVER_VERSION into $target (first time only, about 4 minutes)" >&2
CGO_ENABLED=0 GOBIN="$staging" GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w" \
  "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION" || {
  echo "error: building metrics-server $METRICS_SERVER_VERSION failed (see above)" >&2
  exit 1
}
mkdir -p "$target/bin"
mv "$staging/metrics-server" "$target/bin/metrics-server"
echo "$target"
