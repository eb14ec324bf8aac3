#!/usr/bin/env bash
# A cohort fault drill: 24 phantom scans, one of them corrupt, one worker killed (SIGKILL) in the middle
# of a case, on a 2-worker Dask LocalCluster; then the same scans serially. Expected: 23 done, 1 failed
# (its reason in the manifest), the killed case retried on another worker, every output byte for byte
# the serial run's.
#
# Usage: benchmarks/cohort_drill.sh [WORK_DIR]     (default: a new temporary folder)
# The worker is killed through the cohort engine's test hook (KIDNEY_COHORT_TEST_HOOK: a folder holding
# a file named after a case; "once" kills the worker running that case on its first attempt).
set -euo pipefail
W=${1:-$(mktemp -d)}
python -m kidney phantom --out "$W/scans" -n 24 --seed 77 > /dev/null
head -c 2000 "$W/scans/case_00005/imaging.nii.gz" > "$W/truncated" && mv "$W/truncated" "$W/scans/case_00005/imaging.nii.gz"
mkdir -p "$W/hooks" && echo once > "$W/hooks/case_00011"
KIDNEY_COHORT_TEST_HOOK="$W/hooks" python -m kidney segment -i "$W/scans" -o "$W/out_dask" --workers 2 --quiet || true
python -m kidney segment -i "$W/scans" -o "$W/out_serial" --quiet || true
same=0; differ=0
for f in "$W"/out_serial/*.nii.gz; do
  if cmp -s "$f" "$W/out_dask/$(basename "$f")"; then same=$((same + 1)); else differ=$((differ + 1)); fi
done
echo "outputs identical to the serial run: $same, different: $differ"
python - "$W/out_dask/manifest.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "case" in r and (r.get("status") == "failed" or r.get("retried")):
        print(f"{r['case']}: {r['status']}, attempts {r['attempts']}, retried {r['retried']}, error {r['error']}")
PY
