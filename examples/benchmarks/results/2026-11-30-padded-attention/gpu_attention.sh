# Attention before (9e4733b, .bench-old/9e4733b) and after (the working tree), padded and not, on one GPU.
# Device run: carry [".device-wheels", ".bench-old"]; command: bash .bench-old/gpu_attention.sh
# SMOKE=1 OUT=/tmp/x bash .bench-old/gpu_attention.sh   runs the same loops on the CPU at tiny sizes.
set -o pipefail
if [ -z "$SMOKE" ]; then
  source .device-wheels/setup.sh >/dev/null 2>&1
  export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,driver_version --format=csv > $OUT/env.txt
  size="--dtypes fp16 --repeat 50"; lengths="512 1024 2048 4096 8192 16384 32768 65536"; short="32 64 128 256"
  ks="--ks 128"; shortks="--ks 128 256"; maxpos=512
else
  size="--device cpu --dtypes fp32 --repeat 2 --warmup 1 --tokens 512 --embed-dim 64 --heads 4"
  lengths="64 128"; short="16 32"; ks="--ks 32"; shortks="--ks 32 64"; maxpos=128
fi
old() { (cd .bench-old/9e4733b && PYTHONPATH=${PYTHONPATH%%:*} python -m examples.benchmarks.attention "$@"); }
common="--impls ours $size $ks --no-plots --lengths $lengths"
for r in 1 2; do
  old $common --out-dir $OUT/old-none-$r > $OUT/old-none-$r.log 2>&1
  old $common --padded --out-dir $OUT/old-right-$r > $OUT/old-right-$r.log 2>&1
  python -m examples.benchmarks.attention $common --paddings none right left --out-dir $OUT/new-$r > $OUT/new-$r.log 2>&1
done
python -m examples.benchmarks.attention --impls ours sdpa_full $size $ks --no-plots --lengths ${lengths%% *} \
  --paddings none right --out-dir $OUT/vs-sdpa > $OUT/vs-sdpa.log 2>&1
python -m examples.benchmarks.attention --impls ours sdpa_full $size $shortks --no-plots --lengths $short \
  --max-positions $maxpos --paddings none right --out-dir $OUT/short > $OUT/short.log 2>&1
for f in $OUT/*.log; do echo "== $f: $(grep -c '^\[' $f) cases, $(grep -c 'error\|Error' $f) error lines"; done
# where the padded forward and training step spend their GPU time (kernel tables), n = 512
[ -z "$SMOKE" ] && for p in none right; do
  python -m examples.benchmarks.profile_attention --impl ours --n 512 --k 128 --dtype fp16 --padding $p > $OUT/profile-$p.txt 2>&1
done
