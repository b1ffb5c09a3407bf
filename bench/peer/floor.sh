#!/bin/sh
# Ceilings for issue #4's C-STORE, C-GET and C-MOVE targets, measured in one run on the same files:
# how many instances/s DCMTK storescu gets out of Orthanc, out of a pynetdicom SCP that only acknowledges
# (bench/peer/floor_scp.py: no bridge on pynetdicom can beat it), out of the cheapest bridge the
# design allows (`bridge-floor`: that SCP POSTing each data set to the endpoint below and
# acknowledging after its answer, nothing parsed or indexed) and out of webpacs' DIMSE bridge;
# and how many one-instance STOW-RS requests/s a durable do-nothing litestar endpoint
# (bench/peer/floor_http.py) and webpacs take (bench/peer/floor_stow.py). The bridge pays both floors
# for every instance, since it acknowledges a C-STORE only after its STOW-RS request was answered.
# Retrieval likewise: the harness's C-GET and C-MOVE of its 50-instance study from Orthanc, from
# `retrieve-floor` (bench/peer/floor_qr.py: the bridge's own pynetdicom set-up and send path serving
# the files from disk, no DICOMweb) and from webpacs.
#   bench/peer/floor.sh [ROUNDS]     (default 3; ~3 min per round)
# Cells: storescu x1 (200 files, 1 association), storescu x4 (400 other files, 4 storescu processes),
# HTTP x1 / x4 (the same lists, 1 or 4 kept-alive connections). Every target is started fresh for
# every cell and gets one untimed instance first; targets alternate within a round.
# Output: bench/peer/results/floor-<stamp>.jsonl (one line per measurement), floor-<stamp>.md (the
# table) and floor-<stamp>.log (what the tools wrote to stderr).
# Installs what it needs (bench/peer/prepare.sh: Debian orthanc, orthanc-dicomweb, dcmtk, the harness venv).
set -eu
. "$(dirname "$0")/prepare.sh"
rounds=${1:-3}
stamp=$(date +%Y%m%d-%H%M)
out="$repo/bench/peer/results"
py="$repo/.venv/bin/python"
mkdir -p "$out"
dimse_data
cd "$work"

tmp=$(mktemp -d /tmp/floor.XXXXXX)
raw="$out/floor-$stamp.jsonl"
log="$out/floor-$stamp.log"
: >"$raw"
: >"$log"
find data/dimse/studies -name '*.dcm' | sort >"$tmp/all"
head -n 200 "$tmp/all" >"$tmp/x1"
sed -n 201,600p "$tmp/all" >"$tmp/x4"
# Sent once, untimed, before each cell: the first request pays lazy imports and first-use setup.
warm=$(tail -n 1 "$tmp/all")
for i in 0 1 2 3; do awk -v i=$i 'NR % 4 == i' "$tmp/x4" >"$tmp/x4.$i"; done

current="" pid=""
stop_target() {
  case $current in
    orthanc) orthanc/stop.sh >/dev/null 2>&1 || true ;;
    webpacs) "$repo/bench/peer/stop.sh" >/dev/null 2>&1 || true ;;
    pynetdicom-ack | http-floor | bridge-floor | retrieve-floor)
      for p in $pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done ;;
  esac
  current="" pid=""
}
trap 'stop_target; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

wait_listen() {
  i=0; until ss -ltn "sport = :$1" | grep -q LISTEN; do
    i=$((i + 1)); [ $i -lt 300 ] || { echo "nothing listens on port $1" >&2; exit 1; }; sleep 0.1; done
}

start_http_floor() {
  rm -rf "$tmp/http" && mkdir "$tmp/http"
  "$py" "$repo/bench/peer/floor_http.py" --port 8090 --dir "$tmp/http" 2>>"$log" &
  pid=$! url=http://127.0.0.1:8090
  wait_listen 8090
}

# Sets port, aec (DIMSE) or url, token (HTTP) for the target.
start_target() {
  current=$1 token=""
  case $1 in
    orthanc)
      ORTHANC_TCP_NODELAY=1 orthanc/start.sh --fresh >/dev/null
      port=4242 aec=ORTHANC
      i=0; until echoscu -aet BENCHSCU -aec ORTHANC 127.0.0.1 4242 >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -lt 300 ] || { echo "Orthanc did not start" >&2; exit 1; }; sleep 0.1; done ;;
    pynetdicom-ack)
      "$py" "$repo/bench/peer/floor_scp.py" --port 11199 --ae-title FLOOR 2>>"$log" &
      pid=$! port=11199 aec=FLOOR
      wait_listen 11199 ;;
    http-floor)
      start_http_floor ;;
    bridge-floor)
      start_http_floor
      "$py" "$repo/bench/peer/floor_scp.py" --port 11199 --ae-title FLOOR --forward "$url" 2>>"$log" &
      pid="$pid $!" port=11199 aec=FLOOR
      wait_listen 11199 ;;
    retrieve-floor)
      "$py" "$repo/bench/peer/floor_qr.py" --data "$tmp/study" --port 11198 --ae-title FLOOR \
        --destination BENCHSCP=127.0.0.1:11113 2>>"$log" &
      pid=$! port=11198 aec=FLOOR
      wait_listen 11198 ;;
    webpacs)
      "$repo/bench/peer/start.sh" >"$tmp/start.out"
      token=$(tail -n 1 "$tmp/start.out")
      port=11112 aec=WEBPACS url=http://127.0.0.1:8080 ;;
  esac
}

now() { date +%s.%N; }

# record ROUND CELL INSTANCES RATE: one line of $raw for the current target (RATE null: it failed).
record() {
  echo "{\"round\": $1, \"cell\": \"$2\", \"target\": \"$current\", \"instances\": $3, \"instances_per_s\": $4}" >>"$raw"
  echo "round $1: $2 $current -> $4 inst/s" >&2
}

storescu_cell() {  # ROUND PARALLEL
  if [ "$2" = 1 ]; then lists=$tmp/x1 n=200; else lists="$tmp/x4.0 $tmp/x4.1 $tmp/x4.2 $tmp/x4.3" n=400; fi
  TCP_NODELAY=1 storescu -aet BENCHSCU -aec "$aec" 127.0.0.1 "$port" "$warm" 2>>"$log" || true
  pids="" rc=0
  t0=$(now)
  for list in $lists; do
    # shellcheck disable=SC2046 # one argument per file
    TCP_NODELAY=1 storescu -aet BENCHSCU -aec "$aec" -to 60 -ta 60 -td 60 127.0.0.1 "$port" $(cat "$list") 2>>"$log" &
    pids="$pids $!"
  done
  for p in $pids; do wait "$p" || rc=$?; done
  t1=$(now)
  rate=$(awk -v n=$n -v a="$t0" -v b="$t1" -v rc=$rc 'BEGIN { if (rc) print "null"; else printf "%.1f", n / (b - a) }')
  record "$1" "storescu x$2" $n "$rate"
}

http_cell() {  # ROUND THREADS
  if [ "$2" = 1 ]; then list=$tmp/x1 n=200; else list=$tmp/x4 n=400; fi
  "$py" "$repo/bench/peer/floor_stow.py" --url "$url" ${token:+--token "$token"} "$warm" >/dev/null 2>>"$log" || true
  rc=0
  # shellcheck disable=SC2046
  rate=$("$py" "$repo/bench/peer/floor_stow.py" --url "$url" ${token:+--token "$token"} --threads "$2" \
    $(cat "$list") 2>>"$log") || rc=$?
  [ $rc -eq 0 ] || rate=null
  record "$1" "HTTP x$2" $n "$rate"
}

retrieve_cells() {  # ROUND: the harness's C-GET and C-MOVE phases (3 runs each, median)
  if [ "$current" != retrieve-floor ]; then
    # shellcheck disable=SC2046
    TCP_NODELAY=1 storescu -aet BENCHSCU -aec "$aec" 127.0.0.1 "$port" $(cat "$tmp/study.list") 2>>"$log"
  fi
  .venv/bin/python dimse_bench.py --port "$port" --aec "$aec" --label "$current" --data data/dimse \
    --phases get,move --out "$tmp/retrieve.json" >/dev/null 2>>"$log" || true
  for phase in get move; do
    rate=$("$py" -c 'import json, sys; r = json.load(open(sys.argv[1]))["phases"].get(sys.argv[2], {})
print(r.get("instances_per_s") if r.get("all_ok") else "null")' "$tmp/retrieve.json" $phase 2>>"$log" || echo null)
    [ "$phase" = get ] && cell="C-GET 50" || cell="C-MOVE 50"
    record "$1" "$cell" 50 "${rate:-null}"
  done
  rm -f "$tmp/retrieve.json"
}

# The study the harness retrieves (its largest), as a file list and as a folder for retrieve-floor.
.venv/bin/python -c 'import benchlib as bl, dimse_bench as d
m = bl.load_manifest("data/dimse")
print("\n".join(d.originals_for(m, d.pick_study(m)["StudyInstanceUID"]).values()))' >"$tmp/study.list"
mkdir "$tmp/study"
while read -r file; do ln -s "$work/$file" "$tmp/study/$(basename "$(dirname "$file")")-$(basename "$file")"; done <"$tmp/study.list"

round=1
while [ "$round" -le "$rounds" ]; do
  for parallel in 1 4; do
    for target in orthanc pynetdicom-ack bridge-floor webpacs; do
      start_target $target; storescu_cell $round $parallel; stop_target
    done
    for target in http-floor webpacs; do
      start_target $target; http_cell $round $parallel; stop_target
    done
  done
  for target in orthanc retrieve-floor webpacs; do
    start_target $target; retrieve_cells $round; stop_target
  done
  round=$((round + 1))
done
"$py" "$repo/bench/peer/floor_table.py" "$raw" | tee "$out/floor-$stamp.md"
