# Sourced by bench/peer/*.sh: a writable copy of the shared peer-bench harness in $work
# (PEER_BENCH_DIR, default /tmp/peer-bench), Orthanc and DCMTK (Debian packages, installed if
# missing) and the harness's own virtualenv. Sets `repo` and `work`.
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${PEER_BENCH_DIR:-/tmp/peer-bench}
[ -d "$work" ] || cp -r "$repo/../shared/peer-bench" "$work"
command -v Orthanc >/dev/null 2>&1 && command -v storescu >/dev/null 2>&1 || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb dcmtk gcc curl >/dev/null; }
[ -x "$work/.venv/bin/python" ] || {
  python3 -m venv "$work/.venv"
  "$work/.venv/bin/pip" install -q pydicom pynetdicom numpy httpx dicomweb-client pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg; }

# The DIMSE data set of bench/peer/dimse.sh and floor.sh: 16 studies x 50 instances of 512x512 CT.
dimse_data() {
  [ -f "$work/data/dimse/manifest.json" ] ||
    (cd "$work" && .venv/bin/python gen.py --out data/dimse --studies 16 --series 1 --instances 50 --size 512 --seed 3)
}
