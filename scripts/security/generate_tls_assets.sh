#!/usr/bin/env bash
# Create a private CA plus a server and a client certificate for TLS / mutual TLS with Redis or
# PostgreSQL:
#
#   scripts/security/generate_tls_assets.sh OUT_DIR SAN[,SAN...]
#   scripts/security/generate_tls_assets.sh ./certs localhost,127.0.0.1,redis.internal
#
# Writes OUT_DIR/ca.crt, ca.key, server.crt, server.key, client.crt, client.key. Keys are
# ECDSA P-256, readable by the owner only (0600); certificates are 0644. The CA is valid for
# STEM_TLS_CA_DAYS (3650) days, the server and client certificates for STEM_TLS_DAYS (825).
#
# Idempotent: an existing CA is kept (so certificates already deployed stay trusted) unless it
# expires within a day, and the server/client certificates are only re-issued when missing, no
# longer verifying against that CA (expired included), or when the server SANs differ from the
# list given. Nothing in OUT_DIR is overwritten otherwise.
# Exit codes: 0 done (or already up to date), 1 openssl failed, 2 bad arguments.
set -euo pipefail

CA_DAYS=${STEM_TLS_CA_DAYS:-3650}
LEAF_DAYS=${STEM_TLS_DAYS:-825}

usage() {
  cat >&2 <<EOF
usage: $(basename "$0") OUT_DIR SAN[,SAN...]

  OUT_DIR   directory for ca.crt, ca.key, server.crt, server.key, client.crt, client.key
            (created when missing)
  SAN       comma-separated names the server certificate is valid for: DNS names
            (localhost, redis.internal, *.example.com) and IP addresses (127.0.0.1, ::1)

example: $(basename "$0") ./certs localhost,127.0.0.1
EOF
  exit 2
}

die() { echo "generate_tls_assets: $*" >&2; exit "${2:-1}"; }

# "localhost,127.0.0.1" -> "DNS:localhost,IP:127.0.0.1"; exits 2 on a malformed entry.
san_extension() {
  local out="" item
  local -a items
  IFS=',' read -r -a items <<<"$1"
  for item in "${items[@]}"; do
    if [[ $item =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ || ( $item == *:* && $item =~ ^[0-9A-Fa-f:.]+$ ) ]]; then
      out+="${out:+,}IP:$item"
    elif [[ $item =~ ^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$ ]]; then
      out+="${out:+,}DNS:$item"
    else
      echo "generate_tls_assets: invalid SAN entry '${item}' (expected a DNS name or an IP address)" >&2
      usage
    fi
  done
  [[ -n $out ]] || usage
  echo "$out"
}

new_key() {
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
  chmod 600 "$1"
}

# The SAN list is recorded beside the certificate: openssl prints IPv6 addresses expanded, so
# comparing against the certificate text would re-issue on every run.
sorted_sans() { tr ',' '\n' <<<"$1" | sort | paste -sd, -; }

make_ca() {
  new_key "$OUT/ca.key"
  openssl req -x509 -new -key "$OUT/ca.key" -sha256 -days "$CA_DAYS" \
    -subj "/O=stemrun/CN=stemrun private CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$OUT/ca.crt"
  chmod 644 "$OUT/ca.crt"
}

# issue NAME CN EXTENSIONS: a key and a certificate signed by the CA in OUT.
issue() {
  local name=$1 cn=$2 ext=$3 work
  work=$(mktemp -d "$OUT/.issue.XXXXXX")
  new_key "$work/$name.key"
  openssl req -new -key "$work/$name.key" -subj "/O=stemrun/CN=$cn" -out "$work/$name.csr"
  printf '%s\n' "$ext" >"$work/$name.ext"
  openssl x509 -req -in "$work/$name.csr" -CA "$OUT/ca.crt" -CAkey "$OUT/ca.key" \
    -CAcreateserial -CAserial "$work/ca.srl" -sha256 -days "$LEAF_DAYS" \
    -extfile "$work/$name.ext" -out "$work/$name.crt" 2>/dev/null
  chmod 644 "$work/$name.crt"
  # Key first, then certificate, each by rename: a reader never sees a half-written file.
  mv -f "$work/$name.key" "$OUT/$name.key"
  mv -f "$work/$name.crt" "$OUT/$name.crt"
  rm -rf "$work"
}

signed_by_ca() { openssl verify -CAfile "$OUT/ca.crt" "$1" >/dev/null 2>&1; }

leaf_ok() {
  [[ -s $OUT/$1.crt && -s $OUT/$1.key ]] && signed_by_ca "$OUT/$1.crt"
}

main() {
  [[ $# -eq 2 && -n $1 && -n $2 ]] || usage
  [[ $1 != -* ]] || usage
  command -v openssl >/dev/null 2>&1 || die "openssl is not installed" 1
  OUT=$1
  local sans common
  sans=$(san_extension "$2")
  umask 077
  mkdir -p "$OUT" || die "cannot create $OUT" 1
  common="basicConstraints=critical,CA:FALSE
authorityKeyIdentifier=keyid,issuer
subjectKeyIdentifier=hash"

  # A CA that expires within a day is replaced: everything it signed would stop verifying.
  if [[ ! -s $OUT/ca.crt || ! -s $OUT/ca.key ]] ||
    ! openssl x509 -in "$OUT/ca.crt" -noout -checkend 86400 >/dev/null 2>&1; then
    make_ca
    echo "created CA $OUT/ca.crt" >&2
  fi
  if leaf_ok server && [[ $(cat "$OUT/.server-sans" 2>/dev/null) == "$(sorted_sans "$sans")" ]]; then
    echo "kept $OUT/server.crt ($sans)" >&2
  else
    issue server "${2%%,*}" "$common
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$sans"
    sorted_sans "$sans" >"$OUT/.server-sans"
    echo "issued $OUT/server.crt ($sans)" >&2
  fi
  if leaf_ok client; then
    echo "kept $OUT/client.crt" >&2
  else
    issue client "stemrun-client" "$common
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
    echo "issued $OUT/client.crt" >&2
  fi
}

main "$@"
