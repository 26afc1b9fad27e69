#!/usr/bin/env bash
# pcnn cv on a CPU: one process with one thread, one process with all threads, and one single-threaded worker per
# thread, on the same CK+ fold and members (the models are the same; only the wall time differs).
#
#   bash benchmarks/cv_workers.sh [CKPLUS_ROOT] [OUT_DIR]
#
# Environment: THREADS (2), MEMBERS (2), EPOCHS (4), FOLDS ("0": the fold indices to run).
#
# With COMPARE_SRC=PATH (the src/ folder of another checkout, e.g. a worktree of an older commit) it runs instead the
# default worker choice of that code and of this one, one after the other, on the same folds: the numbers of a
# change to how the workers are sized. LOAD=N (default 0) first starts N busy threads of another process (a torch
# matrix-multiply loop) that runs for the whole comparison and reports the work it got done during each run, so the
# cost to a neighbour is measured too.
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
if [[ -z "${COMPARE_SRC:-}" ]]; then
    run one-thread 1 1
    run one-process "$THREADS" 1
    run workers "$THREADS" "$THREADS"
    exit 0
fi

compare() {  # compare NAME SRC: pcnn cv with its default workers from SRC ("" = this checkout)
    rm -rf "${OUT:?}/$1"
    local start end before after
    before=$(cat "$OUT/load.count" 2>/dev/null || echo 0)
    start=$(date +%s.%N)
    PYTHONPATH="$2${PYTHONPATH:+:$PYTHONPATH}" pcnn cv --dataset ckplus --root "$ROOT" --recipe ckplus \
        --init default --folds 10 --only-folds ${FOLDS:-0} --members "${MEMBERS:-2}" --epochs "${EPOCHS:-4}" \
        --no-progress --out "$OUT/$1" > "$OUT/$1.log" 2>&1
    end=$(date +%s.%N)
    after=$(cat "$OUT/load.count" 2>/dev/null || echo 0)
    python - "$OUT/$1" "$start" "$end" "$before" "$after" <<'PY'
import json, sys
out, start, end, before, after = sys.argv[1:]
cv = json.load(open(f"{out}/cv.json"))
seconds = float(end) - float(start)
sizing = cv.get("worker_sizing") or {}
cores = sizing.get("cores") or {}
print(f"{out.rsplit('/', 1)[-1]:>7}: {seconds:6.1f} s wall, workers {cv['workers']} x {sizing.get('threads', 1)} "
      f"thread(s), cores free at start {cores.get('free', 'not measured')}, accuracy {cv['accuracy_mean']:.2f}%"
      + (f", neighbour {(int(after) - int(before)) / seconds:.2f} matmul/s" if int(after) else ""))
PY
}
if (( ${LOAD:-0} > 0 )); then
    python - "$OUT/load.count" "$LOAD" <<'PY' &
import sys, time, torch
path, threads = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(threads)
a = torch.randn(1024, 1024)
done = 0
while True:
    a = torch.tanh(a @ a) ; done += 1
    if done % 4 == 0:
        open(path, "w").write(str(done))
PY
    LOAD_PID=$!
    trap 'kill $LOAD_PID 2>/dev/null' EXIT
    sleep 5
fi
compare before "$COMPARE_SRC"
compare now ""
