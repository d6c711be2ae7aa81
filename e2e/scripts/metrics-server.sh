#!/usr/bin/env bash
# Builds (once per machine) the pinned metrics-server the QleetOS test environment runs
# against kwok's simulated resource metrics (the HorizontalPodAutoscaler trial) and prints
# the directory that holds bin/metrics-server. Cached outside the repository, keyed by
# version. v0.9.0 is built from the same k8s.io v0.36 libraries as the test clusters
# (v0.9.1 needs a newer Go than this machine's).
set -euo pipefail

exec bash "$(dirname "${BASH_SOURCE[0]}")/go-install-pinned.sh" metrics-server metrics-server \
  "sigs.k8s.io/metrics-server/cmd/metrics-server@v0.9.0" "about 4 minutes"
