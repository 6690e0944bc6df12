#!/usr/bin/env bash
# Throwaway PostgreSQL and MariaDB servers on loopback, for the database rotation tests.
#
#   hack/databases.sh up   [--dir DIR]   install the Debian packages if missing, start both servers (or keep
#                                        the ones already running), write DIR/databases.env, print its path
#   hack/databases.sh env  [--dir DIR]   print DIR/databases.env (`eval "$(hack/databases.sh env)"`)
#   hack/databases.sh down [--dir DIR]   stop both servers and delete DIR
#
# DIR defaults to $MSO_DB_DIR or /tmp/mso-databases. Both servers listen on 127.0.0.1 only, on free ports,
# with a Unix socket, data and logs inside DIR. Safe to run as root: PostgreSQL runs as the `postgres` user,
# MariaDB as `mysql` (both created by the packages), so DIR's parents must be searchable by them (/tmp is).
# The admin accounts are postgres (superuser) and root@'%' (ALL WITH GRANT OPTION), with random passwords.
# The env file exports:
#   MSO_PG_HOST MSO_PG_PORT MSO_PG_USER MSO_PG_PASSWORD MSO_PG_LOG MSO_PG_DATA
#   MSO_MYSQL_HOST MSO_MYSQL_PORT MSO_MYSQL_USER MSO_MYSQL_PASSWORD MSO_MYSQL_SOCKET MSO_MYSQL_LOG
# The PostgreSQL server logs every statement (log_statement=all) on purpose: the tests read that log to prove
# that no password ever reaches the server in clear text.
set -euo pipefail

usage() { echo "usage: $0 up|down|env [--dir DIR]" >&2; exit 2; }
say() { echo "databases: $*" >&2; }

cmd=${1:-}
case $cmd in up | down | env) shift ;; *) usage ;; esac
dir=${MSO_DB_DIR:-/tmp/mso-databases}
while [ $# -gt 0 ]; do
  case $1 in
    --dir) [ $# -ge 2 ] || usage; dir=$2; shift 2 ;;
    *) usage ;;
  esac
done
if [ "$cmd" = up ]; then
  mkdir -p "$dir"
elif [ ! -d "$dir" ]; then
  [ "$cmd" = down ] && { say "nothing to stop: no $dir"; exit 0; }
  say "no $dir: run '$0 up' first"
  exit 1
fi
dir=$(cd "$dir" && pwd)
envfile=$dir/databases.env
pg=$dir/postgresql
my=$dir/mariadb

# --- packages ----------------------------------------------------------------------------------------------

pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
have_postgresql() { local b; b=$(pg_bindir); [ -n "$b" ] && [ -x "$b/initdb" ] && [ -x "$b/pg_ctl" ]; }
have_mariadb() {
  [ -x /usr/sbin/mariadbd ] && command -v mariadb-install-db >/dev/null && command -v mariadb-admin >/dev/null &&
    command -v mariadb >/dev/null
}

install_packages() {
  local wanted=()
  have_postgresql || wanted+=(postgresql)
  have_mariadb || wanted+=(mariadb-server mariadb-client)
  [ ${#wanted[@]} -gt 0 ] || return 0
  say "installing ${wanted[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The packages would start their own system-wide servers on the default ports: forbid that while they
  # install (the usual policy-rc.d trick), unless the machine already has a policy of its own.
  local policy=/usr/sbin/policy-rc.d added_policy=
  if [ ! -e "$policy" ]; then
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    added_policy=1
  fi
  local log=$dir/apt.log updated= rc=0
  local apt=(apt-get -o DPkg::Lock::Timeout=600 -y -q)
  if ! apt-cache show --no-all-versions "${wanted[@]}" >/dev/null 2>&1; then
    "${apt[@]}" update >>"$log" 2>&1 || rc=$?
    updated=1
  fi
  [ "$rc" -ne 0 ] || "${apt[@]}" install --no-install-recommends "${wanted[@]}" >>"$log" 2>&1 || rc=$?
  if [ "$rc" -ne 0 ] && [ -z "$updated" ]; then
    # Stale package lists (a 404 on a superseded .deb): refresh once and try again.
    rc=0
    "${apt[@]}" update >>"$log" 2>&1 || rc=$?
    [ "$rc" -ne 0 ] || "${apt[@]}" install --no-install-recommends "${wanted[@]}" >>"$log" 2>&1 || rc=$?
  fi
  if [ -n "$added_policy" ]; then
    rm -f "$policy"
    trap - EXIT
  fi
  if [ "$rc" -ne 0 ]; then
    say "apt-get failed installing ${wanted[*]}; the end of $log:"
    tail -n 30 "$log" >&2
    exit 1
  fi
  have_postgresql || { say "postgresql installed but initdb/pg_ctl not found"; exit 1; }
  have_mariadb || { say "mariadb-server installed but mariadbd/mariadb-install-db not found"; exit 1; }
}

# --- helpers -----------------------------------------------------------------------------------------------

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
new_password() { head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_alive() { [ -f "$1" ] && kill -0 "$(head -n 1 "$1")" 2>/dev/null; }
service_user() { if id "$1" >/dev/null 2>&1; then echo "$1"; else echo root; fi; }
as_user() {
  local user=$1
  shift
  if [ "$user" = "$(id -un)" ]; then "$@"; else runuser -u "$user" -- "$@"; fi
}

# --- PostgreSQL --------------------------------------------------------------------------------------------

pg_running() { [ -f "$pg/data/postmaster.pid" ] && [ -f "$pg/port" ] && port_open "$(cat "$pg/port")"; }

pg_up() {
  local bin pg_user
  bin=$(pg_bindir)
  pg_user=$(service_user postgres)
  if [ "$pg_user" = root ]; then
    say "PostgreSQL refuses to run as root and there is no postgres user"
    exit 1
  fi
  mkdir -p "$pg/run"
  if [ ! -f "$pg/data/PG_VERSION" ]; then
    rm -rf "$pg/data"
    new_password >"$pg/password"
    chmod 600 "$pg/password"
    install -m 600 -o "$pg_user" "$pg/password" "$pg/pwfile"
    chown "$pg_user" "$pg" "$pg/run"
    (cd "$pg" && as_user "$pg_user" "$bin/initdb" -D "$pg/data" -U postgres --pwfile="$pg/pwfile" \
      --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --no-locale >"$pg/initdb.log" 2>&1) ||
      { say "initdb failed: $pg/initdb.log"; exit 1; }
    rm -f "$pg/pwfile"
  fi
  if pg_running; then
    say "PostgreSQL already running on port $(cat "$pg/port")"
    return 0
  fi
  local port
  port=$(free_port)
  echo "$port" >"$pg/port"
  touch "$pg/postgres.log"
  chown "$pg_user" "$pg/postgres.log" "$pg/run"
  (cd "$pg" && as_user "$pg_user" "$bin/pg_ctl" -D "$pg/data" -l "$pg/postgres.log" -w -t 120 \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$pg/run -c fsync=off \
-c full_page_writes=off -c synchronous_commit=off -c shared_buffers=32MB -c max_connections=100 \
-c log_statement=all -c log_min_error_statement=error -c log_connections=on" start >&2) ||
    { say "PostgreSQL did not start: $pg/postgres.log"; tail -n 20 "$pg/postgres.log" >&2; exit 1; }
  say "PostgreSQL up on 127.0.0.1:$port"
}

pg_down() {
  local bin pg_user
  bin=$(pg_bindir)
  pg_user=$(service_user postgres)
  if [ -f "$pg/data/postmaster.pid" ] && [ -n "$bin" ]; then
    (cd "$pg" && as_user "$pg_user" "$bin/pg_ctl" -D "$pg/data" -m fast -w -t 60 stop >&2) || true
  fi
}

# --- MariaDB -----------------------------------------------------------------------------------------------

my_sql() { mariadb --no-defaults --protocol=socket -S "$my/mysqld.sock" -uroot "$@"; }

my_running() { pid_alive "$my/mysqld.pid" && [ -f "$my/port" ] && port_open "$(cat "$my/port")"; }

my_up() {
  local my_user
  my_user=$(service_user mysql)
  mkdir -p "$my"
  chown "$my_user" "$my"
  local fresh=
  if [ ! -d "$my/data/mysql" ]; then
    rm -rf "$my/data"
    mariadb-install-db --no-defaults --user="$my_user" --datadir="$my/data" --skip-test-db \
      --auth-root-authentication-method=socket >"$my/install-db.log" 2>&1 ||
      { say "mariadb-install-db failed: $my/install-db.log"; exit 1; }
    fresh=1
  fi
  if my_running; then
    say "MariaDB already running on port $(cat "$my/port")"
    return 0
  fi
  if pid_alive "$my/mysqld.pid"; then
    kill "$(head -n 1 "$my/mysqld.pid")" 2>/dev/null || true
    sleep 2
  fi
  local port
  port=$(free_port)
  echo "$port" >"$my/port"
  touch "$my/error.log"
  chown "$my_user" "$my/error.log"
  setsid /usr/sbin/mariadbd --no-defaults --user="$my_user" --datadir="$my/data" --port="$port" \
    --bind-address=127.0.0.1 --socket="$my/mysqld.sock" --pid-file="$my/mysqld.pid" \
    --log-error="$my/error.log" --skip-name-resolve --skip-log-bin --innodb-buffer-pool-size=32M \
    --innodb-flush-log-at-trx-commit=0 --max-connections=200 </dev/null >/dev/null 2>&1 &
  local i
  for i in $(seq 1 120); do
    if mariadb-admin --no-defaults --protocol=socket -S "$my/mysqld.sock" -uroot ping >/dev/null 2>&1; then
      break
    fi
    if [ "$i" -eq 120 ]; then
      say "MariaDB did not start: $my/error.log"
      tail -n 20 "$my/error.log" >&2
      exit 1
    fi
    sleep 0.5
  done
  if [ -n "$fresh" ] || [ ! -f "$my/password" ]; then
    # root@localhost authenticates by Unix socket (the OS user root); the tests log in over TCP as root@'%'.
    new_password >"$my/password"
    chmod 600 "$my/password"
    my_sql <<SQL
CREATE OR REPLACE USER 'root'@'%' IDENTIFIED BY '$(cat "$my/password")';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;
SQL
  fi
  say "MariaDB up on 127.0.0.1:$port"
}

my_down() {
  if pid_alive "$my/mysqld.pid"; then
    local pid i
    pid=$(head -n 1 "$my/mysqld.pid")
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 60); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.5
    done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
}

# --- commands ----------------------------------------------------------------------------------------------

write_env() {
  local tmp=$envfile.tmp
  cat >"$tmp" <<ENV
export MSO_PG_HOST=127.0.0.1
export MSO_PG_PORT=$(cat "$pg/port")
export MSO_PG_USER=postgres
export MSO_PG_PASSWORD=$(cat "$pg/password")
export MSO_PG_LOG=$pg/postgres.log
export MSO_PG_DATA=$pg/data
export MSO_MYSQL_HOST=127.0.0.1
export MSO_MYSQL_PORT=$(cat "$my/port")
export MSO_MYSQL_USER=root
export MSO_MYSQL_PASSWORD=$(cat "$my/password")
export MSO_MYSQL_SOCKET=$my/mysqld.sock
export MSO_MYSQL_LOG=$my/error.log
ENV
  chmod 600 "$tmp"
  mv "$tmp" "$envfile"
}

case $cmd in
  up)
    chmod 755 "$dir"  # the postgres and mysql users must reach their directories inside it
    install_packages
    pg_up
    my_up
    write_env
    echo "$envfile"
    ;;
  env)
    [ -f "$envfile" ] || { say "no $envfile: run '$0 up' first"; exit 1; }
    cat "$envfile"
    ;;
  down)
    pg_down
    my_down
    rm -rf "$dir"
    say "stopped; removed $dir"
    ;;
  *) usage ;;
esac
