#!/usr/bin/env bash
# Point 7 of the evaluation issue: our FeatherFace V1 with the upstream teacher checkpoint, original size (the
# paper's protocol: conf > 0.02, NMS 0.4 with +1 convention, no top-k), scored on val-dev, must match the reference
# figures of ../shared/data/widerface/oracle/reference_ap.json (val_dev.results.featherface_teacher) within 0.3 AP
# points. About 0.65 s per image on 2 threads: ~5 minutes for the 385 images.
#
#   scripts/reproduce_teacher_valdev.sh [OUTPUT_DIR]      (default runs/teacher_valdev)
#
# Exit status 0 when all three settings are within tolerance. Extra arguments after OUTPUT_DIR go to
# `featherface eval` (e.g. --device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${SHARED:-$(cd .. && pwd)/shared}"
OUT="${1:-runs/teacher_valdev}"
shift || true
VAL="$SHARED/data/widerface/val"
CKPT="$SHARED/peers/featherface/featherface_train_mobilenet0.25_Final.pth"
[ -f .venv/bin/activate ] && . .venv/bin/activate

python -m featherface.eval.cli \
  --model "$CKPT" --images "$VAL/images" --gt "$VAL" --image-list "$VAL/val-dev.txt" \
  --protocol original-size --output "$OUT" "$@"

python - "$OUT/results.json" "$SHARED/data/widerface/oracle/reference_ap.json" <<'PY'
import json, sys
res = json.load(open(sys.argv[1]))
ref = json.load(open(sys.argv[2]))["val_dev"]["results"]["featherface_teacher"]["raw"]
tol = 0.003  # 0.3 AP points
ok = True
print(f"protocol: {res['protocol']['label']}")
print(f"{'setting':<8} {'ours':>9} {'reference':>10} {'diff (points)':>14}")
for s in ("easy", "medium", "hard"):
    d = res["ap"][s] - ref[s]
    ok &= abs(d) <= tol
    print(f"{s:<8} {res['ap'][s]:9.6f} {ref[s]:10.6f} {d * 100:+14.3f}")
print(f"detector time: {res['timing']['detector_s']:.1f} s ({res['timing']['detector_s_per_image']:.3f} s/image)")
print("PASS: within 0.3 AP points" if ok else "FAIL: more than 0.3 AP points from the reference")
sys.exit(0 if ok else 1)
PY
