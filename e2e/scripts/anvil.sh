#!/usr/bin/env bash
# Installs (once per machine) the pinned anvil, Foundry's local Ethereum dev chain, from its
# npm package and prints the binary's path. Cached outside the repository, keyed by version.
# The tests run it as the stand-in for the pods of an RPC node's Deployment.
set -euo pipefail

ANVIL_VERSION="1.7.1"
PACKAGE="@foundry-rs/anvil-linux-amd64"
# The npm registry's integrity (sha512, base64) of $PACKAGE@$ANVIL_VERSION's tarball.
INTEGRITY="sha512-+XmShybEaxfCrr0OUUZwYEy2OnYZt5pHH9TzBtLv3+VrK0O/ANuNSVEahqNhKHlgX7GRJ59383ofNhxkRWIYTg=="
cache_root="${QLEETOS_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qleetos}"
target="$cache_root/anvil-$ANVIL_VERSION"
binary="$target/bin/anvil"

if [ ! -x "$binary" ]; then
  if [ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]; then
    echo "error: $PACKAGE ships anvil for Linux on x86_64 only, this is $(uname -s)/$(uname -m)" >&2
    exit 1
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm is needed to install anvil $ANVIL_VERSION (from $PACKAGE);" >&2
    echo "       install Node.js/npm (Debian: apt-get install npm) and retry" >&2
    exit 1
  fi
  echo "installing anvil $ANVIL_VERSION into $target (first time only)" >&2
  mkdir -p "$cache_root"
  staging="$(mktemp -d "$cache_root/anvil-staging.XXXXXX")"
  trap 'rm -rf "$staging"' EXIT
  (cd "$staging" && npm pack --silent "$PACKAGE@$ANVIL_VERSION" >&2) || {
    echo "error: 'npm pack $PACKAGE@$ANVIL_VERSION' failed (see above; is the npm registry reachable?)" >&2
    exit 1
  }
  tarballs=("$staging"/*.tgz)
  if [ ! -f "${tarballs[0]}" ]; then
    echo "error: 'npm pack $PACKAGE@$ANVIL_VERSION' left no tarball in $staging" >&2
    exit 1
  fi
  expected="$(printf '%s' "${INTEGRITY#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')"
  actual="$(sha512sum "${tarballs[0]}" | cut -d' ' -f1)"
  if [ "$expected" != "$actual" ]; then
    echo "error: $PACKAGE@$ANVIL_VERSION's tarball does not match the pinned sha512" >&2
    exit 1
  fi
  mkdir -p "$staging/unpacked"
  tar -xzf "${tarballs[0]}" -C "$staging/unpacked"
  # npm tarballs hold the package under package/; its "bin" entry is ./bin/anvil.
  unpacked="$staging/unpacked/package/bin/anvil"
  if [ ! -f "$unpacked" ]; then
    echo "error: $PACKAGE@$ANVIL_VERSION has no package/bin/anvil" >&2
    exit 1
  fi
  chmod 0755 "$unpacked"
  mkdir -p "$staging/anvil-$ANVIL_VERSION/bin"
  mv "$unpacked" "$staging/anvil-$ANVIL_VERSION/bin/anvil"
  # Another run may have finished first: keep its copy.
  if ! mv -T "$staging/anvil-$ANVIL_VERSION" "$target" 2>/dev/null && [ ! -x "$binary" ]; then
    echo "error: could not move anvil into $target" >&2
    exit 1
  fi
fi
echo "$binary"
