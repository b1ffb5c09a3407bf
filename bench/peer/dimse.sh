#!/bin/sh
# DIMSE only, side by side: the shared peer-bench's dimse_bench.py against Orthanc and against webpacs,
# each on a fresh archive, alternating target by target for ROUNDS rounds (same data, same harness, same
# machine minutes), then one table of medians and ratios.
#   bench/peer/dimse.sh [ROUNDS]     (default 3; ~3 min per round)
# Output: bench/peer/results/dimse-<stamp>-<target>-<round>.json and dimse-<stamp>.md
# Installs what it needs (bench/peer/prepare.sh: Debian orthanc, orthanc-dicomweb, dcmtk, the harness venv).
set -eu
. "$(dirname "$0")/prepare.sh"
rounds=${1:-3}
stamp=$(date +%Y%m%d-%H%M)
out="$repo/bench/peer/results"
mkdir -p "$out"
dimse_data
cd "$work"
round=1
while [ "$round" -le "$rounds" ]; do
  for target in orthanc webpacs; do
    if [ "$target" = orthanc ]; then
      ORTHANC_TCP_NODELAY=1 orthanc/start.sh --fresh >/dev/null
      port=4242 aec=ORTHANC
      i=0; until echoscu -aet BENCHSCU -aec ORTHANC 127.0.0.1 4242 >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -lt 300 ] || { echo "Orthanc did not start" >&2; exit 1; }; sleep 0.1; done
    else
      "$repo/bench/peer/start.sh" >/dev/null
      port=11112 aec=WEBPACS
    fi
    echo "round $round: $target" >&2
    .venv/bin/python dimse_bench.py --port "$port" --aec "$aec" --label "$target" --data data/dimse \
      --out "$out/dimse-$stamp-$target-$round.json" >/dev/null 2>"$out/dimse-$stamp-$target-$round.log" || true
    if [ "$target" = orthanc ]; then orthanc/stop.sh >/dev/null 2>&1 || true; else "$repo/bench/peer/stop.sh" >/dev/null 2>&1 || true; fi
  done
  round=$((round + 1))
done
"$repo/.venv/bin/python" "$repo/bench/peer/dimse_table.py" "$out" "$stamp" | tee "$out/dimse-$stamp.md"
