#!/usr/bin/env bash
# Python tools the end-to-end tests use: schemathesis fuzzes the gateway's OpenAPI document.
set -euo pipefail
SCHEMATHESIS_VERSION=4.32.5
if command -v st >/dev/null 2>&1 && st --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  exit 0
fi
python3 -m pip install --quiet "schemathesis==${SCHEMATHESIS_VERSION}"
