#!/usr/bin/env bash
# Same short recipe trained in fp32 and in bf16 autocast (same seed, data and schedule); prints the FER2013Valid
# accuracy (majority labels, validated in fp32) and the training img/s of both side by side.
#
#   bash benchmarks/bf16_accuracy.sh [FERPLUS_ROOT] [OUT_DIR]      (EPOCHS, SAMPLES, THREADS, SEED override the defaults)
set -euo pipefail
ROOT=${1:-../shared/data/ferplus}
OUT=${2:-runs/bf16-accuracy}
EPOCHS=${EPOCHS:-3}
SAMPLES=${SAMPLES:-8000}
THREADS=${THREADS:-2}
SEED=${SEED:-0}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
python -c "from pcnn_fer.engine.precision import cpu_capabilities as c; print('cpu:', c())"
for amp in none bf16; do
    rm -rf "$OUT/$amp"
    pcnn train --dataset ferplus --root "$ROOT" --recipe ferplus-cpu --epochs "$EPOCHS" --max-train-samples "$SAMPLES" \
        --amp "$amp" --channels-last --threads "$THREADS" --seed "$SEED" --no-progress --out "$OUT/$amp" | tail -2
done
python - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("| precision | FER2013Valid accuracy | mean-class | training img/s |\n| --- | --- | --- | --- |")
for amp in ("none", "bf16"):
    r = json.loads((out / amp / "results.json").read_text())
    v = r["validation"]
    print(f"| {'fp32' if amp == 'none' else amp} | {v['accuracy']:.2f} % | {v['mean_class_accuracy']:.2f} % | "
          f"{r['train_img_per_s']:.1f} |")
PY
