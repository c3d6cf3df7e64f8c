#!/usr/bin/env bash
# PostgreSQL with pgvector for LATM's Postgres backend and its integration tests.
# Idempotent and non-interactive; as root on Debian 12 (bookworm).
#
#   bash .ci/postgres-setup.sh                 install the server and the pgvector extension
#   bash .ci/postgres-setup.sh --start DIR     also init a cluster in DIR (owned by the postgres
#                                              user), start it on 127.0.0.1 on a free port, create
#                                              database and user 'latm' with 'vector' enabled, and
#                                              print LATM_DATABASE_URL=...
#   bash .ci/postgres-setup.sh --stop DIR      stop that cluster
#
# Bookworm ships PostgreSQL 15 but no pgvector package. When 'postgresql-15-pgvector' cannot be
# installed, pgvector is built from Debian's own source package (from the next release, taken
# from the same mirror this machine's apt uses) against postgresql-server-dev-15.
set -euo pipefail

PG_MAJOR=${PG_MAJOR:-15}
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
SOURCE_SUITE=${PGVECTOR_SOURCE_SUITE:-trixie}
log() { echo "postgres-setup: $*" >&2; }

have_vector() { [ -f "/usr/share/postgresql/$PG_MAJOR/extension/vector.control" ]; }

mirror_uri() {
  # The Debian mirror apt already uses (deb822 or one-line format), not a hard-coded host.
  {
    grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' || true
    grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
      awk '{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}' || true
  } | grep -v -- '-security' | head -n 1 || true
}

build_pgvector_from_debian_source() {
  local uri work
  uri=$(mirror_uri)
  if [ -z "$uri" ]; then log "no Debian mirror found in the apt sources"; return 1; fi
  work=$(mktemp -d)
  mkdir -p "$work/lists/partial"
  echo "deb-src $uri $SOURCE_SUITE main" > "$work/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$work/lists" -o "APT::Sandbox::User=root")
  apt-get "${opts[@]}" update -q >/dev/null
  (cd "$work" && apt-get "${opts[@]}" source --download-only -q pgvector >/dev/null)
  tar -xzf "$work"/pgvector_*.orig.tar.gz -C "$work"
  local src
  src=$(find "$work" -maxdepth 1 -type d -name 'pgvector-*' | head -n 1)
  make -C "$src" PG_CONFIG="$PG_BIN/pg_config" OPTFLAGS="" -j"$(nproc)" >/dev/null
  make -C "$src" PG_CONFIG="$PG_BIN/pg_config" install >/dev/null
  rm -rf "$work"
}

install() {
  if [ -x "$PG_BIN/pg_ctl" ] && have_vector; then
    log "PostgreSQL $PG_MAJOR with pgvector is installed"
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    log "not root: install postgresql-$PG_MAJOR and pgvector yourself (the Postgres tests skip without them)"
    return 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q "postgresql-$PG_MAJOR" postgresql-contrib >/dev/null
  if ! have_vector; then
    if apt-get install -y -q "postgresql-$PG_MAJOR-pgvector" >/dev/null 2>&1; then
      log "installed postgresql-$PG_MAJOR-pgvector"
    else
      log "no pgvector package for PostgreSQL $PG_MAJOR: building Debian's pgvector source"
      apt-get install -y -q "postgresql-server-dev-$PG_MAJOR" build-essential >/dev/null
      build_pgvector_from_debian_source
    fi
  fi
  have_vector || { log "pgvector is still missing"; exit 1; }
  log "PostgreSQL $PG_MAJOR with pgvector is ready"
}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local dir=$1 port
  port=${2:-$(free_port)}
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  if [ ! -f "$dir/PG_VERSION" ]; then
    as_postgres "$PG_BIN/initdb" -D "$dir" -U postgres --auth=trust >/dev/null
  fi
  as_postgres "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir" start >/dev/null
  local psql=("$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -v ON_ERROR_STOP=1 -q)
  "${psql[@]}" -tc "SELECT 1 FROM pg_roles WHERE rolname = 'latm'" | grep -q 1 ||
    "${psql[@]}" -c "CREATE ROLE latm LOGIN PASSWORD 'latm'"
  "${psql[@]}" -tc "SELECT 1 FROM pg_database WHERE datname = 'latm'" | grep -q 1 ||
    "${psql[@]}" -c "CREATE DATABASE latm OWNER latm"
  "${psql[@]}" -d latm -c "CREATE EXTENSION IF NOT EXISTS vector"
  echo "LATM_DATABASE_URL=postgresql://latm:latm@127.0.0.1:$port/latm"
}

case "${1:-}" in
  "") install ;;
  --start) [ -n "${2:-}" ] || { log "usage: --start DIR [PORT]"; exit 2; }; install; start "$2" "${3:-}" ;;
  --stop) [ -n "${2:-}" ] || { log "usage: --stop DIR"; exit 2; }
          as_postgres "$PG_BIN/pg_ctl" -D "$2" -m fast -w stop >/dev/null && log "stopped" ;;
  *) log "unknown option $1"; exit 2 ;;
esac
