#!/usr/bin/env bash
# The first video of an app start against a warm one and the GPU's idle gap between queued jobs, on
# the GPU machine (bench/first_video.py): a full-size random TI2V-5B saved in Diffusers layout, the
# product's Studio + worker process under a CAP_GIB card in every process, 720p 5 s at STEPS steps.
# Carry [".whl", ".ffmpeg"] (made here by: bash bench/run_size_menu.sh --prepare).
#   OUT=$OUT bash bench/run_first_video.sh
# Env: STEPS (default 2), CAP_GIB (default 24), BENCH_S (seconds allowed, default 300), PIN_GIB (2),
# PIN_ARGS (e.g. --contention-only: pin_rate.py without the sweep of torch's settings).
# FV_ARGS (e.g. --third-start: a third app start with the job submitted at once).
# To compare with torch's single-threaded pinning:
#   PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True,pinned_use_cuda_host_register:False
set -u
cd "$(dirname "$0")/.."
. bench/device_env.sh
models=/tmp/first-video-models
# Page-locking rate under each of torch's pinned-memory settings (the worker gets the multi-threaded
# host-register one: cluster/devices.worker_environment), PIN_GIB (2) GiB each, a fresh process per
# setting; then that setting alone, beside a thread holding the GIL, and so with short GIL turns.
timeout 150 python3 bench/pin_rate.py --gib ${PIN_GIB:-2} ${PIN_ARGS:-} --out "$OUT" | grep -v "^RESULT " || echo "pin_rate did not finish"
# The random model is built and saved by a process of its own, so the driver never holds the GPU.
timeout 200 python3 bench/size_menu.py --models "$models" --save-only || exit 1
CAP_GIB=${CAP_GIB:-24} PYTHONPATH=$PWD/bench/cap:$PYTHONPATH timeout "${BENCH_S:-300}" \
  python3 bench/first_video.py --models "$models" --steps "${STEPS:-2}" --out "$OUT" ${FV_ARGS:-} \
  | tee "$OUT/first_video.log" | grep -v "^RESULT "
