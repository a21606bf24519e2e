#!/usr/bin/env bash
# One call on the GPU machine: the GPU tests, then `styleid-edge bench --device cuda` at 256 and 1024 px,
# batch 1 and 8, JSON into $OUT (default ./gpu_check_out). Installs nothing; runs from the repository root
# with PYTHONPATH=. (the package need not be installed). Without PyAV the video stages are skipped (noted in
# the JSON); without the YuNet model the detect stage is skipped and faces are placed at known landmarks.
#
#   bash benchmarks/gpu_check.sh            # about 6-8 minutes on an H100
#   SIZES=1024 VARIANTS="nocompile profile" DEADLINE=500 bash benchmarks/gpu_check.sh   # 5 minutes
#   OUT=/tmp/res bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_check_out}"
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"        # DEVICE=cpu SIZES=32 bash benchmarks/gpu_check.sh: a dry run of this script
SIZES="$(echo ${SIZES:-256 1024})"  # word-split and trimmed
BIG="$(printf '%s\n' $SIZES | sort -n | tail -n 1)"  # the variants run at the largest size
BACKEND_ARGS=(${BACKEND:+--backend "$BACKEND"})  # default: torch on cuda (the dry run needs BACKEND=torch)
BACKEND_ARGS+=(--threads 0)  # never empty: "${BACKEND_ARGS[@]}" under set -u needs bash >= 4.4 otherwise
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
log() { echo "[gpu_check $(elapsed)s] $*" | tee -a "$OUT/summary.txt"; }
# DEADLINE=S: the whole script ends within about S seconds (default 540, inside the device tool's 10-minute
# call): each step's timeout is cut to what is left, and a step with under 30 s left is skipped (0: no deadline)
DEADLINE="${DEADLINE:-540}"
tmo() {  # tmo T: T, or the seconds left before DEADLINE (minus 5) when that is less, at least 1
  local t=$1 left
  if [ "$DEADLINE" -gt 0 ]; then
    left=$(( DEADLINE - $(elapsed) - 5 ))
    [ "$left" -lt "$t" ] && t=$left
    [ "$t" -lt 1 ] && t=1  # timeout 0 would mean none
  fi
  echo "$t"
}

{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo "nvidia-smi: not available"
  "$PY" - <<'PYEOF' 2>&1
import importlib, platform
print("python", platform.python_version())
for name in ("torch", "onnx", "onnxruntime", "cv2", "numpy", "av", "pytest", "tensorrt"):
    try:
        m = importlib.import_module(name)
        print(name, getattr(m, "__version__", "?"))
    except Exception as exc:
        print(name, "MISSING", type(exc).__name__)
import torch
print("cuda available", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PYEOF
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

# random-weight packs made once (the same weights for every run at that size), exported on the CPU in the
# background while the GPU tests run
if [ -z "${PACKS:-}" ]; then
  PACKS="$(mktemp -d /tmp/styleid-gpu-packs-XXXXXX)"
  trap 'rm -rf "$PACKS"' EXIT
fi
export_packs() {
  for RES in $SIZES; do
    [ -f "$PACKS/$RES/manifest.json" ] && continue
    log "export a random-weight $RES px pack"
    timeout 240 "$PY" -c "import sys; from styleid_edge.bench.run import make_bench_pack
make_bench_pack(sys.argv[1], int(sys.argv[2]), 2, encoder=sys.argv[3])" "$PACKS/$RES" "$RES" \
        "$([ "$RES" -lt 128 ] && echo tiny || echo full)" > "$OUT/export_$RES.txt" 2>&1
    echo "export $RES exit $?" | tee -a "$OUT/summary.txt"
  done
}
export_packs &
EXPORT_PID=$!

# 1. GPU tests (skipped without pytest)
if [ "${RUN_TESTS:-1}" = 0 ]; then
  log "GPU tests skipped (RUN_TESTS=0)"
elif "$PY" -c "import pytest" 2>/dev/null; then
  log "pytest -m gpu"
  timeout "$(tmo 180)" "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/test_torch_backend.py tests/test_tensorrt.py \
      --junitxml="$OUT/gpu_tests.xml" > "$OUT/gpu_tests.txt" 2>&1
  echo "gpu tests exit $?" | tee -a "$OUT/summary.txt"
  tail -n 15 "$OUT/gpu_tests.txt"
else
  log "pytest is not installed: GPU tests skipped"
fi

# 2. bench: through the CLI when `bench` is wired, else through its register function
if "$PY" -m styleid_edge bench --help > /dev/null 2>&1; then
  BENCH=("$PY" -m styleid_edge bench)
else
  BENCH=("$PY" -c "import argparse, sys
from styleid_edge.bench.cli import register_bench
p = argparse.ArgumentParser(prog='styleid-edge'); register_bench(p.add_subparsers())
a = p.parse_args(['bench'] + sys.argv[1:]); sys.exit(a.func(a))")
fi

wait "$EXPORT_PID"

for RES in $SIZES; do
  [ "${RUN_BENCH:-1}" = 0 ] && { log "bench at $RES px skipped (RUN_BENCH=0)"; continue; }
  # seconds of the whole per-face path with memory sampled (SOAK_S overrides)
  SOAK="${SOAK_S:-$([ "$RES" = 256 ] && echo 20 || echo 40)}"
  log "bench --device $DEVICE --resolution $RES --batches 1,8"
  timeout "$(tmo 300)" "${BENCH[@]}" "${BACKEND_ARGS[@]}" --device "$DEVICE" --pack "$PACKS/$RES" --batches 1,8 --repeats 20 \
      --warmup 5 --frames 10 --soak "$SOAK" --json "$OUT/bench_${DEVICE}_${RES}.json" > "$OUT/bench_${DEVICE}_${RES}.txt" 2>&1
  echo "bench $RES exit $?" | tee -a "$OUT/summary.txt"
  cat "$OUT/bench_${DEVICE}_${RES}.txt" | grep -v "^WARNING" | tail -n 30
done

# 3. at the largest size, in the order of VARIANTS, each while DEADLINE leaves time: `profile` (where the time
#    goes: kernels of the synthesis and the encoder at batch 8, the torch backend as bench runs it but without
#    CUDA graphs so the profiler sees every kernel) and bench variants of the torch backend without baseline
profile() {
  if [ "$(tmo 150)" -lt 30 ]; then log "profile skipped: too little time left"; return; fi
  log "profile $BIG batch 8 (kernels by category)"
  timeout "$(tmo 150)" "$PY" benchmarks/gpu_profile.py --pack "$PACKS/$BIG" --device "$DEVICE" --batch 8 \
      --out "$OUT/profile_${DEVICE}_${BIG}.json" > "$OUT/profile_${DEVICE}_${BIG}.txt" 2>&1
  echo "profile $BIG exit $?" | tee -a "$OUT/summary.txt"
  grep -A8 '"categories_ms_per_face"' "$OUT/profile_${DEVICE}_${BIG}.json" | head -n 24
}
anonymize_clip() {  # the main job end to end on the GPU: a 1080p clip of moving real faces, torch backend defaults
  if [ "$(tmo 150)" -lt 40 ]; then log "anonymize skipped: too little time left"; return; fi
  log "anonymize a 1080p clip with the $BIG px pack (torch backend defaults on $DEVICE)"
  timeout "$(tmo 150)" "$PY" - "$PACKS/$BIG" "$OUT" "$DEVICE" "${CLIP_FRAMES:-50}" \
      > "$OUT/anonymize_${DEVICE}_${BIG}.txt" 2>&1 <<'PYEOF'
import json, subprocess, sys, time
sys.path.insert(0, "tests")
import media
pack, out, device, n_frames = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
clip = media.moving_faces_clip(n_frames=n_frames, size=(1920, 1080), photos=("obama.jpg", "biden.jpg"), seed=1,
                               path=f"{out}/clip_in.mp4")
t = time.perf_counter()
run = subprocess.run([sys.executable, "-m", "styleid_edge", "anonymize", f"{out}/clip_in.mp4", "-o",
                      f"{out}/clip_out.mp4", "--pack", pack, "--backend", "torch", "--backend-option",
                      f"device={device}", "--report", f"{out}/anonymize_report.json"], capture_output=True, text=True)
seconds = time.perf_counter() - t
print(run.stdout[-3000:], run.stderr[-3000:])
report = json.load(open(f"{out}/anonymize_report.json"))
import av
with av.open(f"{out}/clip_out.mp4") as c:
    frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
import numpy as np
changed = [float(np.abs(a.astype(np.int16) - b).max()) for a, b in zip(clip.frames, frames)]
print(json.dumps({"exit": run.returncode, "seconds_incl_start": round(seconds, 1), "frames_out": len(frames),
                  "frames_in": len(clip.frames), "frames_changed": sum(c > 50 for c in changed),
                  "failed": report.get("failed"), "faces": report.get("faces"),
                  "faces_by_method": report.get("faces_by_method"), "fallbacks": report.get("fallbacks"),
                  "providers": report.get("providers"), "timings": report.get("timings")}, default=str))
PYEOF
  echo "anonymize exit $?" | tee -a "$OUT/summary.txt"
  tail -n 3 "$OUT/anonymize_${DEVICE}_${BIG}.txt"
}
variant() {  # NAME TIMEOUT_S BATCHES KEY=VALUE... (torch backend options)
  local name=$1 t batches=$3 opts=()
  t=$(tmo "$2")
  shift 3
  if [ "$t" -lt 30 ]; then log "variant $name skipped: too little time left"; return; fi
  for o in "$@"; do opts+=(--backend-option "$o"); done
  log "bench $BIG $name: $* (no baseline, batches $batches)"
  timeout "$t" "${BENCH[@]}" "${BACKEND_ARGS[@]}" --device "$DEVICE" --pack "$PACKS/$BIG" --batches "$batches" \
      --repeats 20 --warmup 5 --frames 2 --no-baseline "${opts[@]}" --json "$OUT/bench_${DEVICE}_${BIG}_$name.json" \
      > "$OUT/bench_${DEVICE}_${BIG}_$name.txt" 2>&1
  echo "bench $BIG $name exit $?" | tee -a "$OUT/summary.txt"
  grep -E "ms_per_face|ratio|check" "$OUT/bench_${DEVICE}_${BIG}_$name.txt" | head -n 12
}
# nhwc: the synthesis in NHWC too (no faster than NCHW with polyphase upsampling in session 10); nocompile:
# without torch.compile (the default where Triton is usable since session 10); unfused (the session-4 form)
# and fp32 (CUDA graphs, TF32 off) were measured in session 5
VARIANTS="${VARIANTS:-anonymize profile nocompile nhwc unfused fp32}"
for V in $VARIANTS; do
  case "$V" in
    profile) profile ;;
    anonymize) anonymize_clip ;;
    nhwc) variant nhwc 150 1,8 channels_last=1 ;;
    nocompile) variant nocompile 150 1,8 compile=0 ;;
    compile) variant compile 300 8 compile=1 ;;
    unfused) variant unfused 150 1,8 polyphase_up=0 channels_last=0 compile=0 ;;
    fp32) variant fp32 120 1,8 fp16=0 ;;
    *) log "unknown variant $V (known: anonymize profile nhwc nocompile compile unfused fp32)" ;;
  esac
done
log "done; results in $OUT"
