#!/usr/bin/env bash
# The fast-job benchmark on the GPU machine (bench/fast.py): a 4-step guidance-1 job beside the same
# job at the official steps, under a 24 GiB cap, full-size random weights built in memory.
#
# Here, once: bash bench/run_size_menu.sh --prepare && bash bench/run_fast.sh --prepare
#   (.whl gets peft too: the A14B fast job loads its two distill LoRAs through it)
# On the device, each part one call, carry [".whl", ".ffmpeg"]:
#   bash bench/run_fast.sh ti2v     # TI2V-5B 1280×704×121: 50 official steps vs 4
#   bash bench/run_fast.sh a14b     # T2V-A14B 832×480×81: OFFICIAL_STEPS (default 10 of 40) vs 4 + LoRAs
# Env: CAP_GIB (default 24), OFFICIAL_STEPS, OUT (default $OUT or bench/out).
set -u
cd "$(dirname "$0")/.."
if [ "${1:-}" = --prepare ]; then
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl peft || exit 1
  du -sh .whl
  exit 0
fi
. bench/device_env.sh
case "${1:-ti2v}" in
  ti2v) timeout 570 python3 bench/fast.py --model ti2v-5b --size 1280x704x121 --cap-gb "${CAP_GIB:-24}" \
          ${OFFICIAL_STEPS:+--official-steps "$OFFICIAL_STEPS"} | tee "$OUT/fast-ti2v-5b.log" ;;
  a14b) timeout 570 python3 bench/fast.py --model t2v-a14b --size 832x480x81 --cap-gb "${CAP_GIB:-24}" \
          --official-steps "${OFFICIAL_STEPS:-10}" | tee "$OUT/fast-t2v-a14b.log" ;;
  *) echo "usage: bash bench/run_fast.sh --prepare | ti2v | a14b" >&2; exit 2 ;;
esac
