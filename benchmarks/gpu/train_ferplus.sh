#!/usr/bin/env bash
# Train the bundled FERPlus model on a lent GPU inside a fixed time budget, then export it as fp16.
#
#   Prepare here:  python benchmarks/pack_images.py pack ../shared/data/ferplus .devdata/ferplus
#   Run there:     BUDGET=430 OUT=/some/dir bash benchmarks/gpu/train_ferplus.sh   (the device tool sets OUT)
#
# A 40-step calibration run measures img/s (and checks the CUDA path: bf16 + channels_last, falling back to plain
# fp32 if that fails); the epoch count is then chosen so that training fits BUDGET seconds. The schedule (cosine)
# is the ferplus-compact recipe's, scaled to that epoch count. Selection uses FERPlus valid (majority) only.
set -u
export PYTHONPATH=${SRC:-$PWD/src} PYTHONUNBUFFERED=1
BUDGET=${BUDGET:-430}
RECIPE=${RECIPE:-ferplus-compact}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
t0=$(date +%s)
python3 benchmarks/pack_images.py unpack .devdata/ferplus /tmp/ferplus || exit 1
echo "unpacked in $(( $(date +%s) - t0 )) s"
DEVICE=${DEVICE:-cuda}
FLAGS=${FLAGS---amp bf16 --channels-last}
EXTRA=${EXTRA:-}
calibrate() {
  python3 -m pcnn_fer.cli train --dataset ferplus --root /tmp/ferplus --recipe "$RECIPE" --device "$DEVICE" $FLAGS \
    --epochs 2 --max-steps 50 $EXTRA --max-val-samples 512 --out /tmp/calib --no-progress --cache-dir /tmp/cache
}
calibrate || { FLAGS=""; rm -rf /tmp/calib; calibrate; } || exit 1
EPOCHS=$(python3 - "$BUDGET" <<'PY'
import json, sys
h = json.load(open("/tmp/calib/history.json"))
h = h[-1]  # the second calibration epoch: cuDNN autotuning is done
budget = float(sys.argv[1])
epoch_seconds = 27947 / h["img_per_s"] + 2.0  # + validation and checkpoint per epoch
print(max(3, min(100, int(budget / epoch_seconds))))
PY
)
echo "calibration: flags '$FLAGS', $(python3 -c "import json;print(json.load(open('/tmp/calib/history.json'))[-1])")"
echo "training $EPOCHS epochs"
python3 -m pcnn_fer.cli train --dataset ferplus --root /tmp/ferplus --recipe "$RECIPE" --device "$DEVICE" $FLAGS \
  --epochs "$EPOCHS" $EXTRA --out /tmp/run --no-progress --cache-dir /tmp/cache
echo "training done at $(( $(date +%s) - t0 )) s"
python3 - <<'PY'
import os
from pcnn_fer.weights import load_model, save_model
import json
out = os.environ["OUT"]
info = json.load(open("/tmp/run/model.json"))
extra = {k: v for k, v in info.items() if k not in ("format", "weights", "config")}
save_model(load_model("/tmp/run"), f"{out}/model.safetensors", half=True, extra=extra)
PY
for f in history.json history.csv curves.png results.json; do cp /tmp/run/$f "$OUT/" 2>/dev/null; done
timeout 60 python3 -m pcnn_fer.cli bench --device "$DEVICE" --model paper --batch-size 128 --json > "$OUT/bench_cuda.json"
echo "all done at $(( $(date +%s) - t0 )) s"
