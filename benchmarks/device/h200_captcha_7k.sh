#!/usr/bin/env bash
# The second device call of 2026-11-30 (H200): the captcha config trained for 7,000 steps (what 30 minutes
# of the project's 2-core CPU reach alone, measured the same day: ~4.2 steps/s) with and without
# data.repeat_prob=0.2, read at w = 3 and 5. From the repository root; writes $OUT/results7k.tgz.
set -u
START=$(date +%s); BUDGET=${BUDGET:-380}
left() { local l=$((BUDGET - ($(date +%s) - START))); [ "$l" -lt 5 ] && l=5; echo "$l"; }
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PWD/src:/tmp/site
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1; PY=${PY:-python3}
W=${WORK:-/tmp/h7k}; mkdir -p "$W"; OUT=${OUT:-$W/out}; mkdir -p "$OUT"
if [ "${SMOKE:-0}" = 1 ]; then STEPS=6; NUM=12; REAL=60; MIN=1; else STEPS=7000; NUM=500; REAL=2000; MIN=4.9; fi
READER=reader:runs/captcha_reader
variant() {
  local name=$1; shift
  OMP_NUM_THREADS=4 timeout "$(left)" $PY -m ddpmlab train --config configs/captcha.yaml --run "$W/$name" \
    train.steps=$STEPS train.minutes=$MIN train.progress=false train.tensorboard=false \
    train.sample_every=null train.checkpoint_every=1000 train.keep_checkpoints=10 "$@" > "$W/$name.train.log" 2>&1
  for w in 3 5; do
    OMP_NUM_THREADS=4 timeout "$(left)" $PY -m ddpmlab evaluate --run "$W/$name" --features $READER \
      --guidance $w --num $NUM --real-num $REAL --out "$W/$name.w$w.json" > "$W/$name.w$w.log" 2>&1 &
  done
  OMP_NUM_THREADS=4 timeout "$(left)" $PY -m ddpmlab evaluate --run "$W/$name" --features $READER \
    --text fngff,gnfcd --num 16 --real-num 500 --out "$W/$name.fg.json" > "$W/$name.fg.log" 2>&1
  wait
}
variant ctrl7k &
variant rep7k data.repeat_prob=0.2 &
wait
cd "$W" && tar czf "$OUT/results7k.tgz" --exclude='*/checkpoints' --exclude='*/logs' --exclude='out' .
echo "done in $(( $(date +%s) - START )) s"; ls "$W"/*/checkpoints 2>/dev/null | head; tail -n1 "$W"/*.train.log
