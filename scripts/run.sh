#!/usr/bin/env bash
# `make run`: migrate, then start every built service locally in the foreground; Ctrl-C stops all.
# Uses REDIS_URL / DATABASE_URL (defaults: the local Redis and PostgreSQL on 127.0.0.1).
# Logs are JSON lines on stdout, prefixed with the process name.
set -euo pipefail
cd "$(dirname "$0")/.."
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export DATABASE_URL="${DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres}"
UV="${UV:-uv}"
command -v "$UV" >/dev/null 2>&1 || UV="python3 -m uv"

echo "make run: REDIS_URL=${REDIS_URL%%@*}… DATABASE_URL=${DATABASE_URL%%@*}… (passwords not shown)"
$UV run --locked notes-api migrate
$UV run --locked archiver migrate

pids=()
start() {
  local name=$1; shift
  ( exec "$@" 2>&1 | sed -u "s/^/[$name] /" ) &
  pids+=($!)
}
stop_all() {
  echo "make run: stopping ${#pids[@]} processes"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait
}
trap stop_all INT TERM

start notes-api        $UV run --locked notes-api serve
start notes-api-worker $UV run --locked notes-api-worker
start archiver         $UV run --locked archiver
echo "make run: notes-api on http://127.0.0.1:${PORT:-8000} (ops :9100), worker ops :9101, archiver ops :9102"
echo "make run: create a key with 'uv run notes-api create-key --owner you'; see docs/api.md"
wait
