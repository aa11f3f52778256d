# Sourced by the device-machine benchmark wrappers (run_fast.sh, run_size_menu.sh): installs the
# carried wheels (.whl) and imageio-ffmpeg with its xz-compressed binary (.ffmpeg) into /tmp/site,
# and exports PYTHONPATH, IMAGEIO_FFMPEG_EXE and OUT.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
cp -r .ffmpeg/imageio_ffmpeg /tmp/site/ && xz -dc .ffmpeg/ffmpeg.xz > /tmp/ffmpeg && chmod +x /tmp/ffmpeg || exit 1
export PYTHONPATH=/tmp/site:$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 IMAGEIO_FFMPEG_EXE=/tmp/ffmpeg
OUT=${OUT:-bench/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
# The device machine's Python packages come without compiled bytecode (and their folder is not
# writable), so every process compiled the sources of torch, transformers and diffusers as it
# imported them (7.2 s of a worker's 16 s start, 2026-12-03). A pip install compiles them once;
# PRECOMPILE=1 does the same here, into a writable cache every later process reads.
if [ "${PRECOMPILE:-0}" = 1 ]; then
  export PYTHONPYCACHEPREFIX=/tmp/pycache
  timeout 120 python3 -m compileall -q -j 0 "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" /tmp/site >/dev/null 2>&1
fi
