#!/bin/sh
# Stop what bench/peer/start.sh started (the server and its bridge child).
state=${WEBPACS_PEER_STATE:-/tmp/webpacs-peer}
[ -f "$state/pid" ] || exit 0
pid=$(cat "$state/pid")
kill "$pid" 2>/dev/null
i=0
while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do i=$((i + 1)); sleep 0.1; done
kill -9 "$pid" 2>/dev/null
rm -f "$state/pid"
echo "webpacs stopped"
