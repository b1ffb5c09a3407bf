#!/bin/sh
# Peer-bench target `webpacs`: start an EMPTY archive in a fresh temporary folder (HTTP 8080, DICOM
# 11112), register the harness's AEs, and print an admin token as the last line (token_from_start).
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
bin="$repo/.venv/bin"
state=${WEBPACS_PEER_STATE:-/tmp/webpacs-peer}
for port in 8080 11112; do
  if ss -ltn "sport = :$port" | grep -q LISTEN; then
    echo "port $port is taken: stop what listens there first (bench/peer/stop.sh)" >&2; exit 1
  fi
done
rm -rf "$state" && mkdir -p "$state"
export WEBPACS_DATA_DIR="$state/var"
export WEBPACS_BRIDGE_ACCEPT_UNREGISTERED=${WEBPACS_BRIDGE_ACCEPT_UNREGISTERED:-false}
token=$("$bin/webpacs" token create --name peer-bench --role admin)
nohup "$bin/webpacs" serve --workers "${WEBPACS_WORKERS:-1}" >"$state/server.log" 2>&1 &
echo $! >"$state/pid"
i=0
until curl -sf http://127.0.0.1:8080/healthz >/dev/null; do
  i=$((i + 1)); [ $i -lt 300 ] || { echo "webpacs did not start; see $state/server.log" >&2; exit 1; }
  sleep 0.1
done
for node in "BENCHSCP 11113" "BENCHSCU 11114"; do
  set -- $node
  curl -sf -X POST http://127.0.0.1:8080/api/dicom-nodes -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' \
    -d "{\"ae_title\": \"$1\", \"host\": \"127.0.0.1\", \"port\": $2, \"description\": \"peer-bench\"}" >/dev/null
done
i=0
until echoscu -aet BENCHSCU -aec WEBPACS 127.0.0.1 11112 >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -lt 300 ] || { echo "the DIMSE bridge did not start; see $state/server.log" >&2; exit 1; }
  sleep 0.1
done
echo "webpacs started in $state"
echo "$token"
