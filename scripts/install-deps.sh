#!/usr/bin/env bash
# Installs what QleetOS's environment and tests need from Debian's packages (etcd; bind9 and
# dig for the DNS trials; npm, which installs anvil for the RPC-node trials; buildah, which
# builds the container image without a daemon; chromium and its WebDriver for the console
# trial), once.
# Rust and Go toolchains are expected on the machine (see README).
set -euo pipefail

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v named >/dev/null 2>&1 || [ -x /usr/sbin/named ] || missing+=(bind9)
command -v dig >/dev/null 2>&1 || missing+=(bind9-dnsutils)
command -v named-checkconf >/dev/null 2>&1 || [ -x /usr/sbin/named-checkconf ] || missing+=(bind9-utils)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v buildah >/dev/null 2>&1 || missing+=(buildah)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The trials run up to about 30 local clusters at once, and each API server, controller
# manager and Cluster API manager watches its certificate files with inotify: the usual default
# of 128 inotify instances per user runs out ("too many open files"), as kind warns too.
wanted_inotify=1024
current_inotify="$(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null || echo "$wanted_inotify")"
if [ "$current_inotify" -lt "$wanted_inotify" ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "raising fs.inotify.max_user_instances from $current_inotify to $wanted_inotify" >&2
  $sudo_cmd sysctl -q -w "fs.inotify.max_user_instances=$wanted_inotify"
fi

for tool in cargo go; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is required (install the Rust and Go toolchains)" >&2; exit 1; }
done
