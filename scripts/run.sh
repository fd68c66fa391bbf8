#!/usr/bin/env bash
# Starts every service of the platform locally against REDIS_URL and DATABASE_URL.
# The services arrive with their issues (notes-api, archiver, scheduler, fanout); until then this
# says so instead of pretending to run something.
set -euo pipefail
cd "$(dirname "$0")/.."
services=()
for dir in services/*/; do
  [ -f "$dir/pyproject.toml" ] && services+=("$(basename "$dir")")
done
if [ ${#services[@]} -eq 0 ]; then
  echo "make run: no services exist yet (foundation only). Nothing to start."
  echo "The libraries are ready: try 'make test' to see a traced message cross Redis Streams."
  exit 0
fi
echo "make run: starting ${services[*]}"
