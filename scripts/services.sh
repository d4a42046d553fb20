#!/usr/bin/env bash
# Make Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432, database `test`, user postgres,
# trust auth on loopback) answer, installing them with apt-get when missing. Loopback only.
set -euo pipefail

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

apt_install() {
  if [ -z "${STEM_APT_UPDATED:-}" ]; then
    apt-get update -qq
    export STEM_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

wait_for() {
  for _ in $(seq 1 50); do answers "$1" && return 0; sleep 0.2; done
  echo "services: nothing answers on 127.0.0.1:$1 after starting $2" >&2
  return 1
}

ensure_redis() {
  answers 6379 && return 0
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --logfile /tmp/stemrun-redis.log
  wait_for 6379 redis-server
}

pg_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1; }

# Trust on loopback only, for the tests; prepended so it wins over the packaged rules.
trust_loopback() {
  local version hba
  version=$(pg_version)
  hba=/etc/postgresql/$version/main/pg_hba.conf
  grep -q 'stemrun-tests' "$hba" ||
    sed -i '1i host all all 127.0.0.1/32 trust # stemrun-tests\nhost all all ::1/128 trust # stemrun-tests' "$hba"
  sed -i "s/^#\?listen_addresses.*/listen_addresses = 'localhost'/" \
    "/etc/postgresql/$version/main/postgresql.conf"
}

# Start the cluster, or reload it when the package install already started it (systemd).
start_or_reload() {
  local version
  version=$(pg_version)
  if pg_ctlcluster --skip-systemctl-redirect "$version" main status >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  else
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
  fi
}

pg_accepts() { psql -h 127.0.0.1 -U postgres -tAc 'select 1' postgres >/dev/null 2>&1; }

ensure_postgres() {
  if ! answers 5432; then
    [ -n "$(pg_version)" ] || apt_install postgresql
    trust_loopback
    start_or_reload
    wait_for 5432 postgresql
  fi
  if ! pg_accepts && [ -n "$(pg_version)" ]; then
    trust_loopback
    start_or_reload
  fi
  for _ in $(seq 1 25); do pg_accepts && break; sleep 0.2; done
  pg_accepts || {
    echo "services: PostgreSQL on 127.0.0.1:5432 refuses user postgres without a password" >&2
    return 1
  }
  if ! psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='test'" postgres |
    grep -q 1; then
    psql -h 127.0.0.1 -U postgres -c 'create database test' postgres >/dev/null
  fi
}

ensure_redis
ensure_postgres
