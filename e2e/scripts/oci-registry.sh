#!/usr/bin/env bash
# Builds (once per machine) the OCI registry the QleetOS chart trials push a chart to and
# QleetOS pulls it from: go-containerregistry's `registry` command at the pinned version, an
# in-memory registry over plain HTTP on loopback. Prints the path of the binary. Cached
# outside the repository, keyed by version.
set -euo pipefail

dir="$(bash "$(dirname "${BASH_SOURCE[0]}")/go-install-pinned.sh" oci-registry registry \
  "github.com/google/go-containerregistry/cmd/registry@v0.22.1" "about 2 minutes")"
echo "$dir/bin/registry"
