#!/usr/bin/env bash
# The microservice example, one piece per terminal, on this machine (loopback only):
#
#   run.sh certs    private CA + server and client certificates (scripts/security/generate_tls_assets.sh)
#   run.sh redis    TLS-only redis-server on 127.0.0.1:$REDIS_TLS_PORT, client certificates required
#   run.sh keys     a new signing key (stemrun keys generate) into $STATE_DIR/signing.env
#   run.sh worker   stemrun worker on stem.yaml, with the signing key in its environment
#   run.sh api      the enqueue API: HTTPS on 127.0.0.1:$API_PORT, client certificates required
#
# Settings, all optional: STATE_DIR (default .local beside this script), CERTS_DIR ($STATE_DIR/certs),
# REDIS_TLS_PORT (6380), API_PORT (8443), ORDERS_NAMESPACE (orders),
# PYTHON (the repository's .venv/bin/python when it exists, else python3).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export STATE_DIR=${STATE_DIR:-$here/.local}
export CERTS_DIR=${CERTS_DIR:-$STATE_DIR/certs}
export REDIS_TLS_PORT=${REDIS_TLS_PORT:-6380}
API_PORT=${API_PORT:-8443}
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$repo/.venv/bin/python" ]; then PYTHON=$repo/.venv/bin/python; else PYTHON=python3; fi
fi

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# The keys live in a file only this user can read, and reach the processes as STEM_SIGNING_*.
load_keys() {
  if [ ! -f "$STATE_DIR/signing.env" ]; then
    echo "no signing key in $STATE_DIR/signing.env: run '$0 keys' first" >&2
    exit 2
  fi
  set -a
  # shellcheck disable=SC1091
  . "$STATE_DIR/signing.env"
  set +a
}

new_keys() {
  if [ -f "$STATE_DIR/signing.env" ]; then
    # A new key would make the workers reject every task still signed with the old one.
    echo "$STATE_DIR/signing.env exists; delete it first to start over with a new key" >&2
    exit 2
  fi
  mkdir -p "$STATE_DIR"
  (umask 077 && "$PYTHON" -m stemrun keys generate >"$STATE_DIR/signing.env")
  echo "wrote $STATE_DIR/signing.env"
}

redis() {
  mkdir -p "$STATE_DIR/redis"
  exec redis-server --bind 127.0.0.1 --port 0 --tls-port "$REDIS_TLS_PORT" \
    --tls-cert-file "$CERTS_DIR/server.crt" --tls-key-file "$CERTS_DIR/server.key" \
    --tls-ca-cert-file "$CERTS_DIR/ca.crt" --tls-auth-clients yes \
    --dir "$STATE_DIR/redis" --save "" --appendonly yes --appendfsync everysec \
    --maxmemory-policy noeviction
}

api() {
  load_keys
  export ENQUEUER_TLS_CERT=${ENQUEUER_TLS_CERT-$CERTS_DIR/server.crt}
  export ENQUEUER_TLS_KEY=${ENQUEUER_TLS_KEY-$CERTS_DIR/server.key}
  export ENQUEUER_TLS_CLIENT_CA=${ENQUEUER_TLS_CLIENT_CA-$CERTS_DIR/ca.crt}
  exec "$PYTHON" "$here/enqueuer.py" --port "$API_PORT"
}

case "${1:-}" in
  certs) exec bash "$repo/scripts/security/generate_tls_assets.sh" "$CERTS_DIR" localhost,127.0.0.1 ;;
  redis) redis ;;
  keys) new_keys ;;
  worker) load_keys; exec "$PYTHON" -m stemrun worker -C "$here/stem.yaml" ;;
  api) api ;;
  *) usage ;;
esac
