#!/usr/bin/env bash
# Builds (once per machine) one Go command at a pinned version into
# ~/.cache/qleetos/NAME-VERSION/bin/BINARY and prints that directory's parent.
# Usage: go-install-pinned.sh NAME BINARY PACKAGE@VERSION "how long the first build takes"
set -euo pipefail

name="$1" binary="$2" package="$3" estimate="$4"
version="${package##*@}"
cache_root="${QLEETOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qleetos}"
target="$cache_root/$name-$version"

if [ -x "$target/bin/$binary" ]; then
  echo "$target"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "error: the Go toolchain is needed to build $name ($package); install Go >= 1.26 and retry" >&2
  exit 1
fi

mkdir -p "$target"
staging="$(mktemp -d "$target/../build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
echo "building $name $version into $target (first time only, $estimate)" >&2
CGO_ENABLED=0 GOBIN="$staging" GOFLAGS=-mod=mod go install -trimpath -ldflags "-s -w" "$package" || {
  echo "error: building $name $version failed (see above)" >&2
  exit 1
}
mkdir -p "$target/bin"
mv "$staging/$binary" "$target/bin/$binary"
echo "$target"
