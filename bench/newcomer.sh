#!/usr/bin/env bash
# A newcomer's first hour, timed on this machine: from a fresh clone to a first trained detector.
#
#   bench/newcomer.sh [REPO]          # REPO defaults to this repository; MINUTES=5 is the training budget
#
# Three times from the moment of the clone: setup (`make setup`: a fresh .venv, every package from
# PyPI or pip's cache: the honest cost), the first packed dataset (init, import, pack of the bundled
# sample) and the first trained detector (train, export, and eval on the sample's validation split
# with mAP@0.5 above zero). Everything happens in a temp folder, removed at the end (KEEP=1 keeps it).
# Target (issue 7): the first detector within 15 minutes of the clone, setup included.
set -euo pipefail
REPO=${1:-$(cd "$(dirname "$0")/.." && pwd)}
MINUTES=${MINUTES:-5}
tmp=$(mktemp -d /tmp/newcomer.XXXXXX)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
since() { echo $(( $(date +%s) - start )); }

git clone -q "$REPO" "$tmp/kit"
cd "$tmp/kit"
echo "clone: $tmp/kit at $(git rev-parse --short HEAD)"
make setup > "$tmp/setup.log" 2>&1 || { tail -20 "$tmp/setup.log"; exit 1; }
t_setup=$(since)
echo "setup done at ${t_setup}s ($(.venv/bin/pip list 2>/dev/null | wc -l) packages)"

hack=.venv/bin/hack
$hack init ws --labels labeling/sample/labels.txt
(cd ws && ../$hack import ../labeling/sample/aquarium-a --scene aquarium-a)
(cd ws && ../$hack pack photos --out data)
t_pack=$(since)
echo "first packed dataset at ${t_pack}s"

(cd ws && ../$hack train data --out run --max-minutes "$MINUTES" 2>&1 | grep -v "batch/s" || true)
(cd ws && ../$hack export run --out export)
(cd ws && ../$hack eval export --data data/val.rec --out report --bootstrap 100 > /dev/null)
map=$(.venv/bin/python -c "import json; print(json.load(open('ws/report/metrics.json'))['in_scene']['voc07_map50'])")
t_detector=$(since)
echo "first trained detector at ${t_detector}s: VOC07 mAP@0.5 ${map} on the sample's validation split"

echo
echo "TIME setup ${t_setup}s"
echo "TIME first_packed_dataset ${t_pack}s"
echo "TIME first_trained_detector ${t_detector}s (mAP@0.5 ${map}, training budget ${MINUTES} min)"
python3 -c "import sys; m=float('$map'); t=$t_detector; print('TARGET', 'met' if m > 0 and t <= 900 else 'MISSED', f'({t/60:.1f} min, mAP {m:.4f}; target: mAP > 0 within 15 min)')"
