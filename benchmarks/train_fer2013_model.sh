#!/usr/bin/env bash
# Train the shipped `fer2013` model (src/pcnn_fer/assets/pcnn_fer2013.safetensors) on a CPU.
#
#   bash benchmarks/train_fer2013_model.sh [FER2013_ROOT] [RUN_DIR]
#
# Fine-tunes the bundled FERPlus model (--init default: it never saw PublicTest or PrivateTest) on FER2013's own
# 7 labels with the fer2013 recipe, selecting on PublicTest (the dataset's validation split), within BUDGET minutes
# (default 100), then writes the selected model as fp16 into the package and evaluates it on PublicTest.
# Environment: BUDGET (100 minutes), AMP (auto), INIT (default: the checkpoint to fine-tune from, e.g. fer2013 for a
# second cycle of the shipped model), EPOCHS (the recipe's).
set -euo pipefail
ROOT=${1:-../shared/data/fer2013}
RUN=${2:-runs/fer2013}
BUDGET=${BUDGET:-100}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
python -c "from pcnn_fer.engine.precision import cpu_capabilities as c; print('cpu:', c())"
more=()
[ -n "${EPOCHS:-}" ] && more+=(--epochs "$EPOCHS")
pcnn train --dataset fer2013 --root "$ROOT" --recipe fer2013 --init "${INIT:-default}" --channels-last \
    --amp "${AMP:-auto}" --time-budget "$BUDGET" --no-progress "${more[@]}" --out "$RUN"
python - "$RUN" <<'PY'
import json, sys
from pcnn_fer.weights import BUNDLED_MODELS, load_model, save_model
run = sys.argv[1]
info = json.load(open(f"{run}/model.json"))
extra = {k: v for k, v in info.items() if k not in ("format", "weights", "config")}
save_model(load_model(run), BUNDLED_MODELS["fer2013"], half=True, extra=extra)
print(f"wrote {BUNDLED_MODELS['fer2013']}")
PY
pcnn evaluate --checkpoint fer2013 --dataset fer2013 --root "$ROOT" --split public_test --out "$RUN/eval-public-test"
