#!/usr/bin/env bash
# Builds (once per machine) the pinned external-dns the QleetOS test environment runs and
# prints the directory that holds it: bin/external-dns and the module's plain CRD YAML,
# crd/dnsendpoints.externaldns.k8s.io.yaml (the DNSEndpoint source) and
# crd/dnsrecords.externaldns.k8s.io.yaml (for --registry=crd). Cached outside the
# repository, keyed by version.
#
# The binary is e2e/external-dns: upstream external-dns's flags, sources, plan and
# registries with only the rfc2136 and inmemory providers linked (the full upstream
# binary needs a module the proxy refuses; see e2e/external-dns/main.go). external-dns
# v0.23.0 needs Go >= 1.27, so this build (and only this build) runs under the
# go1.27.3 toolchain, which the go command fetches from the module proxy once.
set -euo pipefail

EXTERNAL_DNS_VERSION="v0.23.0"
GO_TOOLCHAIN="go1.27.3"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
module_dir="$here/external-dns"
cache_root="${QLEETOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qleetos}"
# Keyed by the version and our main's sources, so a changed main is rebuilt.
source_hash="$(cat "$module_dir/go.mod" "$module_dir/go.sum" "$module_dir/main.go" | sha256sum | cut -c1-12)"
target="$cache_root/external-dns-$EXTERNAL_DNS_VERSION-$source_hash"
crd_name="dnsendpoints.externaldns.k8s.io.yaml"

if [ -x "$target/bin/external-dns" ] && [ -s "$target/crd/$crd_name" ]; then
  echo "$target"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "error: the Go toolchain is needed to build external-dns;" >&2
  echo "       install Go >= 1.21 (it fetches $GO_TOOLCHAIN from the module proxy) and retry" >&2
  exit 1
fi
if ! grep -qE "^\s*(require )?sigs\.k8s\.io/external-dns $EXTERNAL_DNS_VERSION\$" "$module_dir/go.mod"; then
  echo "error: $module_dir/go.mod does not require sigs.k8s.io/external-dns $EXTERNAL_DNS_VERSION;" >&2
  echo "       keep EXTERNAL_DNS_VERSION in $0 and the go.mod in step" >&2
  exit 1
fi

export GOTOOLCHAIN="$GO_TOOLCHAIN" CGO_ENABLED=0
mkdir -p "$target"
staging="$(mktemp -d "$target/../build.XXXXXX")"
trap 'rm -rf "$staging"' EXIT

echo "building external-dns $EXTERNAL_DNS_VERSION ($GO_TOOLCHAIN) into $target (first time only, a few minutes)" >&2
ldflags="-s -w -X sigs.k8s.io/external-dns/pkg/apis/externaldns.Version=$EXTERNAL_DNS_VERSION"
(cd "$module_dir" && go build -mod=readonly -buildvcs=false -trimpath -ldflags "$ldflags" -o "$staging/external-dns" .) || {
  echo "error: building external-dns $EXTERNAL_DNS_VERSION from $module_dir failed (see above)" >&2
  exit 1
}

src_dir="$(cd "$module_dir" && go list -m -f '{{.Dir}}' sigs.k8s.io/external-dns)" || {
  echo "error: cannot locate the sigs.k8s.io/external-dns $EXTERNAL_DNS_VERSION module source" >&2
  exit 1
}
crd_src="$src_dir/config/crd/standard"
[ -s "$crd_src/$crd_name" ] || { echo "error: $crd_src/$crd_name is missing from the external-dns module" >&2; exit 1; }

mkdir -p "$target/bin" "$target/crd"
cp "$crd_src"/*.yaml "$target/crd/"
chmod 0644 "$target/crd/"*.yaml
mv "$staging/external-dns" "$target/bin/external-dns"
echo "$target"
