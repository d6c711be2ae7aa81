#!/usr/bin/env bash
# Builds the QleetOS container image without a daemon or a registry: buildah assembles, from
# scratch, the layout of image/Containerfile's final stage (the two binaries at /, the glibc
# and libgcc they link, CA certificates, user 65532, OCI labels), from binaries built on this
# machine. Then it starts each binary inside the image as that user and checks the version it
# prints, and writes the image as an OCI archive (load it with `podman load` or push it with
# `skopeo copy oci-archive:... docker://...`).
#
# usage: scripts/build-image.sh [--profile release|debug] [--tag IMAGE] [--check]
# --check: build and check, then remove the image instead of writing the archive (CI).
set -euo pipefail

profile=release
check=false
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
tag="ghcr.io/qleetos/qleetos:${version}"
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --check) check=true; shift ;;
    *) echo "usage: $0 [--profile release|debug] [--tag IMAGE] [--check]" >&2; exit 2 ;;
  esac
done

command -v buildah >/dev/null 2>&1 || { echo "error: buildah is required (make deps, or apt-get install buildah)" >&2; exit 1; }
binaries=(qleetos-operator qleetos-api-gateway)
for binary in "${binaries[@]}"; do
  [ -x "target/$profile/$binary" ] || { echo "error: target/$profile/$binary is missing: cargo build --workspace --bins$( [ "$profile" = release ] && echo ' --release')" >&2; exit 1; }
done

buildah=(buildah --storage-driver vfs)
container=$("${buildah[@]}" from scratch)
trap '"${buildah[@]}" rm "$container" >/dev/null 2>&1 || true' EXIT

libraries=$(for binary in "${binaries[@]}"; do ldd "target/$profile/$binary" | grep -o '/[^ ]*'; done | sort -u)
for library in $libraries; do
  "${buildah[@]}" copy "$container" "$(readlink -f "$library")" "$library" >/dev/null
done
for binary in "${binaries[@]}"; do
  "${buildah[@]}" copy --chmod 0555 "$container" "target/$profile/$binary" "/$binary" >/dev/null
done
# The chart renderer: the pinned helm (a static Go binary), as /helm.
helm=$(bash e2e/scripts/helm.sh)
"${buildah[@]}" copy --chmod 0555 "$container" "$helm" /helm >/dev/null
"${buildah[@]}" copy "$container" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
passwd=$(mktemp)
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$passwd"
"${buildah[@]}" copy --chmod 0444 "$container" "$passwd" /etc/passwd >/dev/null
rm -f "$passwd"

revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
"${buildah[@]}" config \
  --user 65532:65532 \
  --env QLEETOS_HELM=/helm \
  --entrypoint '["/qleetos-operator"]' \
  --label org.opencontainers.image.title=qleetos \
  --label "org.opencontainers.image.description=QleetOS control plane: qleetos-operator and qleetos-api-gateway" \
  --label org.opencontainers.image.source=https://github.com/qleetos/qleetos \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$revision" \
  "$container"

for binary in "${binaries[@]}"; do
  printed=$("${buildah[@]}" run --isolation chroot --user 65532:65532 "$container" "/$binary" --version)
  [ "$printed" = "$binary $version" ] || { echo "error: /$binary --version in the image printed '$printed', expected '$binary $version'" >&2; exit 1; }
  echo "in the image, as user 65532: $printed"
done

printed=$("${buildah[@]}" run --isolation chroot --user 65532:65532 "$container" /helm version --short)
case "$printed" in v3.*) echo "in the image, as user 65532: helm $printed" ;; *) echo "error: /helm version in the image printed '$printed'" >&2; exit 1 ;; esac

"${buildah[@]}" commit --quiet "$container" "$tag" >/dev/null
if $check; then
  "${buildah[@]}" rmi "$tag" >/dev/null
  echo "image checked ($profile binaries)"
  exit 0
fi
mkdir -p target/image
archive="target/image/qleetos-${version}.oci.tar"
rm -f "$archive"
"${buildah[@]}" push --quiet "$tag" "oci-archive:$archive:$tag"
echo "built $tag ($profile binaries): $archive, $(du -h "$archive" | cut -f1)"
