#!/usr/bin/env bash
# Planner benchmark on one GPU under a 24 GiB cap, every target case, one process per model.
#   bash bench/run_all.sh                         # ti2v-5b 1280x704x121; t2v/i2v-a14b 832x480x81 + 1280x720x81
#   bash bench/run_all.sh t2v-a14b:832x480x81     # a subset: model[:WxHxF,...] ...
#   TINY=1 bash bench/run_all.sh                  # CPU smoke test with tiny models
# Env: OUT (results folder, default bench/out), STEPS (default 3), STEPS_720P (default 2),
#      REF_STEPS (uncapped reference, default 2; 0 skips it), BASELINES (default model_offload),
#      CAP_GB (default 24), DECODE_I2V (default 0: I2V stops at latents, its decode being the same
#      Wan2.1-VAE decode at the same size as T2V's; its VAE encode of the start image still runs).
# Carried wheels in .whl/ (diffusers, ftfy, wcwidth, importlib_metadata) are installed first.
set -u
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
cases=("$@")
[ ${#cases[@]} -eq 0 ] && cases=(ti2v-5b t2v-a14b i2v-a14b)
status=0
for c in "${cases[@]}"; do
  model=${c%%:*}
  sizes=${c#*:}
  if [ "$sizes" = "$c" ]; then
    case $model in ti2v-5b) sizes=1280x704x121 ;; *) sizes=832x480x81,1280x720x81 ;; esac
  fi
  extra=()
  if [ "${TINY:-0}" = 1 ]; then extra+=(--tiny); sizes=64x64x5; fi  # CPU smoke test of this script
  [ "$model" = i2v-a14b ] && [ "${DECODE_I2V:-0}" = 0 ] && extra+=(--no-decode)
  echo "=== $model $sizes ($(date +%T))"
  python3 bench/run_plan.py --model "$model" --sizes "$sizes" --steps "${STEPS:-3}" "${extra[@]}" \
    --steps-720p "${STEPS_720P:-2}" --ref-steps "${REF_STEPS:-2}" --cap-gb "${CAP_GB:-24}" \
    --baselines "${BASELINES:-model_offload}" --out "$OUT" 2>&1 | grep -v "^RESULT " | tee "$OUT/$model.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
echo "=== all ($(date +%T))"
python3 bench/report.py "$OUT"
exit $status
