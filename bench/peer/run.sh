#!/bin/sh
# Run the shared peer-bench harness on a writable copy, Orthanc and webpacs in the same run.
#   bench/peer/run.sh [--target webpacs-2workers] [--quick] [extra run_all.py args]
# Needs: Debian packages orthanc orthanc-dicomweb dcmtk (installed here if missing).
set -eu
. "$(dirname "$0")/prepare.sh"
"$repo/.venv/bin/python" - "$repo" "$work" <<'PY'
import json, sys
repo, work = sys.argv[1], sys.argv[2]
targets = json.load(open(f"{work}/targets.json"))
targets["webpacs"]["start"] = f"{repo}/bench/peer/start.sh"
targets["webpacs"]["stop"] = f"{repo}/bench/peer/stop.sh"
# The same server with two HTTP worker processes (uvicorn --workers 2) on the same SQLite index.
targets["webpacs-2workers"] = {
    **targets["webpacs"],
    "note": "webpacs on the embedded default with --workers 2",
    "start": f"WEBPACS_WORKERS=2 {repo}/bench/peer/start.sh",
}
json.dump(targets, open(f"{work}/targets.local.json", "w"), indent=2)
PY
cd "$work"
exec .venv/bin/python run_all.py --targets targets.local.json --target orthanc --target webpacs "$@"
