#!/usr/bin/env bash
# The size-menu benchmark on the GPU machine: every TI2V-5B size the UI offers through the queue and
# a worker process under a 24 GiB cap in every process (bench/size_menu.py), and A14B jobs with
# weights built in memory (bench/e2e.py: the device disk cannot hold A14B).
#
# Here, once (carried: .whl = diffusers and friends, .ffmpeg = imageio-ffmpeg without its binary
# plus the binary xz-compressed; together under the 64 MiB a device call carries):
#   bash bench/run_size_menu.sh --prepare
# On the device, each part one call (each under 9 minutes), carry [".whl", ".ffmpeg"]:
#   bash bench/run_size_menu.sh 720p      # 720p 5 s, with an image, 10 s, portrait; then 720p 5 s warm
#   bash bench/run_size_menu.sh 1080p     # 1080p 5 s, with an image, 10 s, portrait 10 s; then warm
#   bash bench/run_size_menu.sh a14b      # T2V-A14B 832×480×81 and 1280×720×81, 3 steps, in memory
# Through the worker from disk (each ~71 GB in Diffusers layout; each part removes the other models'
# folders first; one GPU, CUDA_VISIBLE_DEVICES=0). The nvidia-h200-x2 machine's 128 GiB disk holds
# one whole; on the 1-GPU machine's 64 GiB the second expert is saved as hard links to the first's
# files (~43 GB on disk; the worker still reads, pins and places two experts):
#   bash bench/run_size_menu.sh t2v-a14b-disk   # save T2V-A14B, then 480p (cold), 720p, 480p warm; 3 steps
#   bash bench/run_size_menu.sh i2v-a14b-disk   # the same for I2V-A14B, each job from an image
# Speech to video through the worker (one H200 machine: ~46 GB in the official release's layout on
# its 64 GiB disk, alone: the other models' folders are removed first):
#   bash bench/run_size_menu.sh s2v             # save S2V-14B, then 832×480 (cold), 1024×704, 832×480 warm; 2 steps
# Env: STEPS (default 2), A14B_STEPS (default 3), CASES (';'-separated size_menu cases instead of
# the part's), CAP_GIB (default 24), JOBS_S (the disk parts' seconds for the jobs, default 330),
# OUT (default $OUT or bench/out).
set -u
cd "$(dirname "$0")/.."
if [ "${1:-}" = --prepare ]; then
  exclude="$(git rev-parse --git-common-dir)/info/exclude"
  for d in /.whl/ /.ffmpeg/; do grep -qxF "$d" "$exclude" 2>/dev/null || echo "$d" >> "$exclude"; done
  python3 -m pip download -q --no-deps --only-binary=:all: -d .whl diffusers==0.42.1 importlib_metadata ftfy wcwidth || exit 1
  pkg=$(python3 -c "import imageio_ffmpeg, os; print(os.path.dirname(imageio_ffmpeg.__file__))") || exit 1
  rm -rf .ffmpeg && mkdir -p .ffmpeg/imageio_ffmpeg/binaries
  cp "$pkg"/*.py .ffmpeg/imageio_ffmpeg/
  xz -9 -c "$pkg"/binaries/ffmpeg-* > .ffmpeg/ffmpeg.xz || exit 1
  du -sh .whl .ffmpeg
  exit 0
fi
. bench/device_env.sh
STEPS=${STEPS:-2}
# The host's memory and the GPU's every 5 s while the jobs run (a worker killed for host memory
# shows as RAM at its limit, then a kernel OOM line), and what the kernel said at the end.
watch_host() {
  while true; do
    echo "$(date +%T) $(free -g | awk '/Mem/ {print "ram used", $3, "of", $2, "GiB, cache", $6}')" \
      "$(nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv,noheader 2>/dev/null)" >> "$1"
    sleep 5
  done
}
host_report() {
  echo "host memory, every 5 s (last 12 and the highest):"; tail -12 "$1"
  sort -k4 -n "$1" | tail -1
  dmesg 2>/dev/null | grep -iE "killed process|out of memory" | tail -5
}
case "${1:-720p}" in
  720p)  cases=${CASES:-"720p 5 s;720p 5 s, image;720p 10 s;portrait 720p 5 s"} ;;
  1080p) cases=${CASES:-"1080p 5 s;1080p 5 s, image;1080p 10 s;portrait 1080p 10 s"} ;;
  a14b)
    # No warm-up job: the compile shows in the first step, as in a fresh worker's first job. Three
    # steps, so one step-to-step gap falls before the expert swap.
    status=0
    for part in 832x480x81:200 1280x720x81:300; do  # size:seconds allowed
      size=${part%%:*}
      timeout "${part##*:}" python3 bench/e2e.py --model t2v-a14b --size $size --steps "${A14B_STEPS:-3}" \
        --cap-gb "${CAP_GIB:-24}" --skip-baseline --no-warmup | tee "$OUT/a14b-$size.log" \
        | grep -E "^RESULT|Error|error" || status=1
    done
    exit $status ;;
  t2v-a14b-disk|i2v-a14b-disk)
    # Within one 10-minute device call: save ≤ 240 s (~71 GB from the GPU, shard by shard), then the
    # worker's cold load and pin (~60 s) and three jobs (~230 s at 3 steps) ≤ 330 s.
    model=${1%-disk}
    models=/tmp/size-menu-models
    export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
    timeout 240 python3 bench/size_menu.py --model "$model" --models "$models" --save-only --evict || exit 1
    df -h "$models" | tail -1
    watch_host "$OUT/host-$1.log" &
    watcher=$!
    CAP_GIB=${CAP_GIB:-24} PYTHONPATH=$PWD/bench/cap:$PYTHONPATH timeout "${JOBS_S:-330}" \
      python3 bench/size_menu.py --model "$model" --models "$models" --steps "${A14B_STEPS:-3}" \
      ${CASES:+--cases "$CASES"} --out "$OUT/$1" | tee "$OUT/size_menu-$1.log" | grep -v "^RESULT "
    status=${PIPESTATUS[0]}
    kill $watcher 2>/dev/null
    host_report "$OUT/host-$1.log"
    exit "$status" ;;
  s2v)
    # Within one 10-minute device call: save ≤ 200 s (~46 GB, part by part from the GPU), then the
    # cold load and pin (~60 s) and three jobs of 5 s of speech (~150 s at 2 steps) ≤ 360 s.
    models=/tmp/size-menu-models
    export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
    timeout 200 python3 bench/size_menu.py --model s2v-14b --models "$models" --save-only --evict || exit 1
    df -h "$models" | tail -1
    watch_host "$OUT/host-$1.log" &
    watcher=$!
    CAP_GIB=${CAP_GIB:-24} PYTHONPATH=$PWD/bench/cap:$PYTHONPATH timeout "${JOBS_S:-360}" \
      python3 bench/size_menu.py --model s2v-14b --models "$models" --steps "$STEPS" \
      ${CASES:+--cases "$CASES"} --out "$OUT/$1" | tee "$OUT/size_menu-$1.log" | grep -v "^RESULT "
    status=${PIPESTATUS[0]}
    kill $watcher 2>/dev/null
    host_report "$OUT/host-$1.log"
    exit "$status" ;;
  *) echo "unknown part '$1': 720p, 1080p, a14b, t2v-a14b-disk, i2v-a14b-disk, s2v or --prepare" >&2; exit 2 ;;
esac
models=/tmp/size-menu-models
# The random model is built and saved by a process of its own, so the driver never holds the GPU.
python3 bench/size_menu.py --models "$models" --save-only || exit 1
# Every process from here on (the driver and the worker it spawns) sees a card of CAP_GIB.
CAP_GIB=${CAP_GIB:-24} PYTHONPATH=$PWD/bench/cap:$PYTHONPATH timeout 500 \
  python3 bench/size_menu.py --models "$models" --steps "$STEPS" --cases "$cases" --out "$OUT/$1" \
  | tee "$OUT/size_menu-$1.log" | grep -v "^RESULT "
