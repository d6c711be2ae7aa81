#!/usr/bin/env bash
# Builds (once per machine) the chart repository the QleetOS tests and the local environment
# serve on loopback, and prints its directory: a classic Helm repository (index.yaml plus
# archives) made with the real `helm package` and `helm repo index`. It holds the official
# external-dns chart from its Go module (sigs.k8s.io/external-dns at the pinned version,
# charts/external-dns) and the test charts of e2e/charts (web at two versions, widgets).
# Cached outside the repository, keyed by the charts' content and the pinned versions.
set -euo pipefail

EXTERNAL_DNS_VERSION="v0.23.0"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
helm="$(bash "$here/scripts/helm.sh")"
cache_root="${QLEETOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qleetos}"
source_hash="$( (cd "$here/charts" && find . -type f -print0 | sort -z | xargs -0 sha256sum; echo "$EXTERNAL_DNS_VERSION"; "$helm" version --short) | sha256sum | cut -c1-12)"
target="$cache_root/charts-$source_hash"

if [ -s "$target/index.yaml" ]; then
  echo "$target"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "error: the Go toolchain is needed to fetch the external-dns chart (module sigs.k8s.io/external-dns@$EXTERNAL_DNS_VERSION)" >&2
  exit 1
fi
# The module needs Go >= 1.27 to be extracted: the go command fetches go1.27.3 once (as
# external-dns.sh does for its build).
GOTOOLCHAIN=go1.27.3 GOFLAGS=-mod=mod go mod download "sigs.k8s.io/external-dns@$EXTERNAL_DNS_VERSION" >&2
module_dir="$(go env GOMODCACHE)/sigs.k8s.io/external-dns@$EXTERNAL_DNS_VERSION"
if [ ! -f "$module_dir/charts/external-dns/Chart.yaml" ]; then
  echo "error: sigs.k8s.io/external-dns@$EXTERNAL_DNS_VERSION has no charts/external-dns in the module cache ($module_dir)" >&2
  exit 1
fi

mkdir -p "$cache_root"
staging="$(mktemp -d "$cache_root/charts.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
export HELM_CACHE_HOME="$staging/.helm/cache" HELM_CONFIG_HOME="$staging/.helm/config" HELM_DATA_HOME="$staging/.helm/data"
"$helm" package "$module_dir/charts/external-dns" --destination "$staging" >&2
"$helm" package "$here/charts/web" --destination "$staging" >&2
"$helm" package "$here/charts/web" --version 1.1.0 --destination "$staging" >&2
"$helm" package "$here/charts/widgets" --destination "$staging" >&2
rm -rf "$staging/.helm"
"$helm" repo index "$staging" >&2
rm -rf "$target"
mv "$staging" "$target"
trap - EXIT
echo "$target"
