#!/usr/bin/env bash
# Re-run every row of the paper's table that this machine can measure (docs/results.md), then print the table.
#
#   bash benchmarks/paper_table.sh [OUT_DIR]
#
# Dataset roots come from the environment (defaults: ../shared/data/...). Rows whose data is absent are skipped with
# the reason: FERPlus test + its occlusion/pose lists (FERPLUS_TEST_LISTS=folder with the list files), JAFFE
# (JAFFE_ROOT), RAF-DB images (RAFDB_ROOT with Image/aligned). Selection never touches a test split.
set -uo pipefail
OUT=${1:-runs/paper-table}
DATA=${DATA:-../shared/data}
FERPLUS=${FERPLUS:-$DATA/ferplus}
FER2013=${FER2013:-$DATA/fer2013}
CKPLUS=${CKPLUS:-$DATA/ckplus48/CK+48}
JAFFE_ROOT=${JAFFE_ROOT:-}
RAFDB_ROOT=${RAFDB_ROOT:-$DATA/rafdb}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
mkdir -p "$OUT"
python -c "from pcnn_fer.engine.precision import cpu_capabilities as c; print('cpu:', c())"

row() {  # row NAME COMMAND...: run one row, time it, keep its log
    local name=$1; shift
    echo "== $name: $*"
    local start=$SECONDS
    if "$@" > "$OUT/$name.log" 2>&1; then
        echo "$name $((SECONDS - start)) s" >> "$OUT/times.txt"; tail -1 "$OUT/$name.log"
    else
        echo "   failed (see $OUT/$name.log)"; tail -2 "$OUT/$name.log"
    fi
}

[ -d "$FERPLUS/FER2013Valid" ] && row ferplus-valid pcnn evaluate --checkpoint default --dataset ferplus \
    --root "$FERPLUS" --split valid --out "$OUT/ferplus-valid"
if [ -d "$FERPLUS/FER2013Test" ]; then
    row ferplus-test pcnn evaluate --checkpoint default --dataset ferplus --root "$FERPLUS" --split test \
        --out "$OUT/ferplus-test"
    for list in ${FERPLUS_TEST_LISTS:+$FERPLUS_TEST_LISTS/*}; do
        row "ferplus-test-$(basename "$list" .txt)" pcnn evaluate --checkpoint default --dataset ferplus \
            --root "$FERPLUS" --split test --subset-list "$list" --out "$OUT/ferplus-test-$(basename "$list" .txt)"
    done
else
    echo "-- FERPlus test: held out here (no $FERPLUS/FER2013Test)"
fi
[ -d "$FER2013" ] && row fer2013-public-test pcnn evaluate --checkpoint fer2013 --dataset fer2013 --root "$FER2013" \
    --split public_test --out "$OUT/fer2013-public-test"
[ -d "$CKPLUS" ] && row ckplus-10fold pcnn cv --dataset ckplus --root "$CKPLUS" --recipe ckplus --init default \
    --folds 10 --no-progress --out "$OUT/ckplus-10fold"
if [ -n "$JAFFE_ROOT" ]; then
    row jaffe-10fold pcnn cv --dataset jaffe --root "$JAFFE_ROOT" --recipe jaffe --init default --folds 10 \
        --no-progress --out "$OUT/jaffe-10fold"
    row jaffe-random pcnn cv --dataset jaffe --root "$JAFFE_ROOT" --recipe jaffe --init default --folds 10 \
        --protocol random --no-progress --out "$OUT/jaffe-random"
else
    echo "-- JAFFE: held out here (set JAFFE_ROOT to the folder of 213 .tiff files)"
fi
if compgen -G "$RAFDB_ROOT/Image/aligned/*" > /dev/null; then
    row rafdb-train pcnn train --dataset rafdb --root "$RAFDB_ROOT" --recipe ferplus-cpu --init default \
        --channels-last --time-budget 110 --no-progress --out "$OUT/rafdb"
    row rafdb-test pcnn evaluate --checkpoint "$OUT/rafdb" --dataset rafdb --root "$RAFDB_ROOT" --split test \
        --out "$OUT/rafdb-test"
else
    echo "-- RAF-DB: images unavailable here (labels only)"
fi

python - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
print("\n| row | result |\n| --- | --- |")
for p in sorted(out.glob("*/metrics.json")):
    m = json.loads(p.read_text())
    print(f"| {p.parent.name} | {m['accuracy']:.2f} % (mean-class {m['mean_class_accuracy']:.2f} %, {m['num_samples']} faces) |")
for p in sorted(out.glob("*/cv.json")):
    c = json.loads(p.read_text())
    print(f"| {p.parent.name} | {c['accuracy_mean']:.2f} ± {c['accuracy_std']:.2f} % ({c['protocol_description']}, "
          f"{len(c['per_fold'])}/{c['folds']} folds) |")
PY
[ -f "$OUT/times.txt" ] && cat "$OUT/times.txt"
