#!/usr/bin/env bash
# Compile-check the native TensorRT backend (trt_model.cpp, backend.cpp) against TensorRT headers without
# TensorRT libraries or a GPU: g++ -fsyntax-only with the real NvInfer.h of each TensorRT version given.
#
#   native/tools/check_tensorrt_api.sh TRT_INCLUDE_DIR [TRT_INCLUDE_DIR ...]
#
# TRT_INCLUDE_DIR: a folder holding NvInfer.h (a TensorRT install's include/, or `include/` of a tag of
# github.com/NVIDIA/TensorRT, e.g. v10.16 and v11.1). CUDA headers: $CUDA_INCLUDE (default: the
# nvidia-cuda-runtime-cu12 and nvidia-cuda-nvcc-cu12 wheels installed in this Python), OpenVINO's from the
# openvino wheel. Exit 0 when every file compiles against every version.
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,10p "$0"; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PYTHON:-python3}
site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
OV_INC="$site/openvino/include"
CUDA_INC=${CUDA_INCLUDE:-"$site/nvidia/cuda_runtime/include:$site/nvidia/cuda_nvcc/include"}
[ -f "$OV_INC/openvino/openvino.hpp" ] || { echo "OpenVINO headers not found under $OV_INC (pip install openvino)"; exit 2; }
cuda_flags=()
IFS=: read -r -a cuda_dirs <<< "$CUDA_INC"
for d in "${cuda_dirs[@]}"; do cuda_flags+=(-isystem "$d"); done
found=0
for d in "${cuda_dirs[@]}"; do [ -f "$d/cuda_runtime_api.h" ] && found=1; done
[ $found = 1 ] || { echo "cuda_runtime_api.h not found in $CUDA_INC: pip install nvidia-cuda-runtime-cu12" \
  "nvidia-cuda-nvcc-cu12 (headers only are used), or set CUDA_INCLUDE=DIR[:DIR] to a CUDA toolkit's include/"; exit 2; }
status=0
for trt in "$@"; do
  [ -f "$trt/NvInfer.h" ] || { echo "$trt: no NvInfer.h here"; status=1; continue; }
  version=$(grep -hE '#define (NV_TENSORRT_MAJOR|TRT_MAJOR_ENTERPRISE|NV_TENSORRT_MINOR|TRT_MINOR_ENTERPRISE) ' \
            "$trt/NvInferVersion.h" | awk '{print $3}' | grep -E '^[0-9]+$' | paste -sd. -)
  for f in native/src/trt_model.cpp native/src/backend.cpp; do
    if g++ -std=c++17 -fsyntax-only -Wall -Wextra -Werror -DSTYLEID_EDGE_WITH_TENSORRT -I"$ROOT/native/src" \
         -I"$ROOT/native/include" -isystem "$OV_INC" -isystem "$trt" "${cuda_flags[@]}" "$ROOT/$f"; then
      echo "ok    TensorRT ${version:-?} ($trt): $f"
    else
      echo "FAIL  TensorRT ${version:-?} ($trt): $f"; status=1
    fi
  done
done
exit $status
