#!/usr/bin/env bash
# Prepares a private, unprivileged BIND (Debian's bind9) for the QleetOS tests and prints
# the directory it wrote. Usage: bind9-zone.sh DIR [PORT] [ZONE]
#   (defaults: PORT 15353, ZONE qleetos.test)
# DIR gets named.conf, the zone file, the TSIG key (tsig.conf for named, and
# tsig.name / tsig.alg / tsig.secret for clients). The zone takes RFC2136 updates and
# gives zone transfers (AXFR) to that key only; nothing else is writable. Run it in the
# foreground with
#   named -g -n 1 -c DIR/named.conf
# (as any user that can write DIR; it listens on 127.0.0.1:PORT, UDP and TCP, and needs no
# root). external-dns then takes
#   --provider=rfc2136 --rfc2136-host=127.0.0.1 --rfc2136-port=PORT --rfc2136-zone=ZONE
#   --rfc2136-tsig-keyname=$(cat DIR/tsig.name) --rfc2136-tsig-secret=$(cat DIR/tsig.secret)
#   --rfc2136-tsig-secret-alg=$(cat DIR/tsig.alg) --rfc2136-axfr
# and `dig @127.0.0.1 -p PORT NAME` reads the answers (bind9-dnsutils).
set -euo pipefail

dir="${1:?usage: $0 DIR [PORT] [ZONE]}"
port="${2:-15353}"
zone="${3:-qleetos.test}"
key_name="qleetos-external-dns"
key_alg="hmac-sha256"

missing=()
command -v named >/dev/null 2>&1 || [ -x /usr/sbin/named ] || missing+=(bind9)
command -v dig >/dev/null 2>&1 || missing+=(bind9-dnsutils)
command -v named-checkconf >/dev/null 2>&1 || missing+=(bind9-utils)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing Debian packages: ${missing[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  { $sudo_cmd apt-get update -qq && \
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null; } || {
    echo "error: installing ${missing[*]} with apt-get failed (see above)" >&2
    exit 1
  }
fi

mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
if [ ! -s "$dir/tsig.secret" ]; then
  head -c 32 /dev/urandom | base64 > "$dir/tsig.secret"
fi
secret="$(cat "$dir/tsig.secret")"
printf '%s\n' "$key_name" > "$dir/tsig.name"
printf '%s\n' "$key_alg" > "$dir/tsig.alg"
cat > "$dir/tsig.conf" <<EOF
key "$key_name" {
  algorithm $key_alg;
  secret "$secret";
};
EOF

cat > "$dir/named.conf" <<EOF
include "$dir/tsig.conf";
options {
  directory "$dir";
  pid-file "$dir/named.pid";
  session-keyfile "$dir/session.key";
  managed-keys-directory "$dir";
  listen-on port $port { 127.0.0.1; };
  listen-on-v6 { none; };
  recursion no;
  dnssec-validation no;
  allow-query { any; };
  allow-transfer { key "$key_name"; };
  notify no;
};
controls { };
zone "$zone" {
  type primary;
  file "$dir/$zone.zone";
  journal "$dir/$zone.zone.jnl";
  allow-update { key "$key_name"; };
};
EOF

# A fresh zone each time: drop the journal of a previous run with it.
rm -f "$dir/$zone.zone.jnl"
cat > "$dir/$zone.zone" <<EOF
\$TTL 60
@   IN SOA ns1.$zone. hostmaster.$zone. ( 1 60 60 3600 60 )
@   IN NS  ns1.$zone.
ns1 IN A   127.0.0.1
EOF

named-checkconf "$dir/named.conf" >&2 || {
  echo "error: named-checkconf rejected $dir/named.conf" >&2
  exit 1
}
echo "$dir"
