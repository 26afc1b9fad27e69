#!/usr/bin/env bash
# Ablation of PCNN on FERPlus under one CPU budget: PCNN and its baselines (docs/robustness.md), each trained with the
# same recipe and the same --time-budget, selected on FER2013Valid, evaluated there, and run through
# `pcnn robustness`; prints a markdown table (also written to OUT_DIR/ablation.md).
#
#   bash benchmarks/ablation.sh [FERPLUS_ROOT] [OUT_DIR]
#
# Runs (RUNS, default all): pcnn (the PRESET), resnet (ResNet-18, same width/stem/input), resnet-wide (ResNet-18 at
# sqrt(2) x width: PCNN's FLOPs), global (global-only PCNN), nomdim (PCNN without MDIM), ce (PCNN, plain CE loss).
# The budget is wall-clock per run, so a cheaper model trains more epochs in it (--time-budget lowers the epoch count
# after the first epoch). The script resumes: a run with results.json is kept, one with last.pt is resumed, and
# evaluations already written are kept.
#
# Environment: RECIPE (ferplus-cpu), PRESET (small), BUDGET (30 minutes per run), AMP (auto), RUNS, ROBUST_SAMPLES (1000; 0 = the
# whole split; none = no robustness run), CORRUPTIONS (all), SEED (0), INIT (a start for every run, e.g. dlib with
# PRESET=dlib RECIPE=ferplus-dlib: the face-pretrained ablation; default none: from scratch), INPUT_SIZE (default: the
# recipe's); smoke tests: EPOCHS, MAX_STEPS, MAX_TRAIN, MAX_VAL, VALID_LIST (a subset
# list of FER2013Valid file names: evaluate on those only). OMP_NUM_THREADS=1 runs two halves side by side on 2 cores
# (RUNS="pcnn resnet" ... & RUNS="global nomdim" ...), then RUNS=all prints the table.
set -euo pipefail
ROOT=${1:-../shared/data/ferplus}
OUT=${2:-runs/ablation}
RECIPE=${RECIPE:-ferplus-cpu}
PRESET=${PRESET:-small}
BUDGET=${BUDGET:-30}
RUNS=${RUNS:-"pcnn resnet resnet-wide global nomdim ce"}
ROBUST_SAMPLES=${ROBUST_SAMPLES:-1000}
CORRUPTIONS=${CORRUPTIONS:-all}
SEED=${SEED:-0}
AMP=${AMP:-auto}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
python -c "from pcnn_fer.engine.precision import cpu_capabilities as c; print('cpu:', c())"

caps=()
[ -n "${EPOCHS:-}" ] && caps+=(--epochs "$EPOCHS")
[ -n "${MAX_STEPS:-}" ] && caps+=(--max-steps "$MAX_STEPS")
[ -n "${MAX_TRAIN:-}" ] && caps+=(--max-train-samples "$MAX_TRAIN")
[ -n "${MAX_VAL:-}" ] && caps+=(--max-val-samples "$MAX_VAL")
[ -n "${INIT:-}" ] && caps+=(--init "$INIT")
[ -n "${INPUT_SIZE:-}" ] && caps+=(--input-size "$INPUT_SIZE")
evaluate=()
[ -n "${VALID_LIST:-}" ] && evaluate+=(--subset-list "$VALID_LIST")
robust=(--corruptions $CORRUPTIONS --seed "$SEED" --no-progress)
[ "$ROBUST_SAMPLES" = none ] || robust+=(--max-samples "$ROBUST_SAMPLES")  # 0: the full split

for run in $RUNS; do
    case $run in
        pcnn) flags=(--model "$PRESET") ;;
        ce) flags=(--model "$PRESET" --loss ce) ;;
        resnet | resnet-wide | global | nomdim) flags=(--model "$PRESET-$run") ;;
        *) echo "ablation.sh: unknown run '$run' (pcnn resnet resnet-wide global nomdim ce)" >&2; exit 2 ;;
    esac
    dir=$OUT/$run
    if [ ! -f "$dir/results.json" ]; then
        if [ -f "$dir/last.pt" ]; then
            echo "== $run: resuming $dir"
            pcnn train --resume "$dir" --no-progress
        else
            echo "== $run: pcnn train --recipe $RECIPE ${flags[*]} --time-budget $BUDGET ${caps[*]}"
            pcnn train --dataset ferplus --root "$ROOT" --recipe "$RECIPE" "${flags[@]}" --time-budget "$BUDGET" \
                --channels-last --amp "$AMP" --seed "$SEED" --no-progress "${caps[@]}" --out "$dir"
        fi
    fi
    [ -f "$dir/eval-valid/metrics.json" ] ||
        pcnn evaluate --checkpoint "$dir" --dataset ferplus --root "$ROOT" --split valid "${evaluate[@]}" \
            --out "$dir/eval-valid"
    [ "$ROBUST_SAMPLES" = none ] || [ -f "$dir/robustness/robustness.json" ] ||
        pcnn robustness --checkpoint "$dir" --dataset ferplus --root "$ROOT" --split valid "${robust[@]}" \
            --out "$dir/robustness"
done

python - "$OUT" "$RECIPE" "$BUDGET" $RUNS <<'PY'
import json, sys
from pathlib import Path

import torch

from pcnn_fer import load_model
from pcnn_fer.bench import count_flops
from pcnn_fer.models.pcnn import count_parameters

out, recipe, budget, runs = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
rows = []
for run in runs:
    d = out / run
    model = load_model(d)
    size = model.config.input_size
    gflops = count_flops(model, torch.zeros(1, 3, size, size)) / 1e9
    results = json.loads((d / "results.json").read_text())
    history = json.loads((d / "history.json").read_text())
    valid = json.loads((d / "eval-valid" / "metrics.json").read_text())
    robust_file = d / "robustness" / "robustness.json"
    robust = json.loads(robust_file.read_text()) if robust_file.is_file() else None
    empty = {"accuracy": None}
    s = robust["summary"] if robust else {k: empty for k in ("occlusion", "pose", "quality", "all")}
    fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    rows.append(f"| {run} | {results['recipe']['model']} | {results['recipe']['loss']} | "
                f"{count_parameters(model) / 1e6:.2f} | {gflops:.3f} | {results['epochs_done']} | "
                f"{sum(r['time'] for r in history) / 60:.1f} | {valid['accuracy']:.2f} | "
                f"{valid['mean_class_accuracy']:.2f} | {fmt(robust and robust['clean']['accuracy'])} | "
                f"{fmt(s['occlusion']['accuracy'])} | {fmt(s['pose']['accuracy'])} | {fmt(s['quality']['accuracy'])} | "
                f"{fmt(s['all']['accuracy'])} |")
robust_text = (f"robustness: mean accuracy over strengths 1-3 on {robust['num_samples']} FER2013Valid faces "
               f"(seed {robust['seed']})" if robust else "no robustness run")
table = "\n".join([
    f"Recipe {recipe}, --time-budget {budget} min per run; FER2013Valid majority labels ({valid['num_samples']} "
    f"faces{', subset ' + valid['subset'] if valid['subset'] else ''}); {robust_text}.",
    "",
    "| run | model | loss | params (M) | GFLOPs | epochs | train min | FER2013Valid acc | mean-class | robust clean "
    "| occlusion | pose | quality | all |",
    "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    *rows,
])
(out / "ablation.md").write_text(table + "\n")
print(table)
PY
