#!/usr/bin/env bash
# pcnn cv on a CPU: one process with one thread, one process with all threads, and one single-threaded worker per
# thread, on the same CK+ fold and members (the models are the same; only the wall time differs).
#
#   bash benchmarks/cv_workers.sh [CKPLUS_ROOT] [OUT_DIR]
#
# Environment: THREADS (2), MEMBERS (2), EPOCHS (4), FOLDS ("0": the fold indices to run).
set -euo pipefail
ROOT=${1:-../shared/data/ckplus48/CK+48}
OUT=${2:-runs/cv-workers}
THREADS=${THREADS:-2}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p "$OUT"
python -c "from pcnn_fer.engine.precision import cpu_capabilities as c, cpu_model as m; print('cpu:', m(), c())"
run() {  # run NAME THREADS WORKERS
    rm -rf "${OUT:?}/$1"
    local start end
    start=$(date +%s.%N)
    pcnn cv --dataset ckplus --root "$ROOT" --recipe ckplus --init default --folds 10 --only-folds ${FOLDS:-0} \
        --members "${MEMBERS:-2}" --epochs "${EPOCHS:-4}" --threads "$2" --workers "$3" --no-progress \
        --out "$OUT/$1" > "$OUT/$1.log" 2>&1
    end=$(date +%s.%N)
    python - "$OUT/$1" "$start" "$end" "$2" "$3" <<'PY'
import json, sys
out, start, end, threads, workers = sys.argv[1:]
cv = json.load(open(f"{out}/cv.json"))
print(f"threads {threads}, workers {workers}: {float(end) - float(start):6.1f} s wall, "
      f"accuracy {cv['accuracy_mean']:.2f}% over {len(cv['per_fold'])} fold(s) x {cv['members']} member(s)")
PY
}
run one-thread 1 1
run one-process "$THREADS" 1
run workers "$THREADS" "$THREADS"
