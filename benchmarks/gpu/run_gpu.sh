#!/usr/bin/env bash
# GPU check: build the artifacts and benchmark CUDA (and TensorRT where it starts) against PyTorch CUDA fp32,
# fp16 (autocast, .half()), fp16 + SDPA and torch.compile. Finishes within 8 minutes, install included, and
# writes what it measured even when cut short; results go to benchmarks/gpu/results/ (gpu-summary.md/.json/.png,
# per-model .md/.json/.png). Every row that could not run says "not measured: why".
#
#   bash benchmarks/gpu/run_gpu.sh                         # online: a fresh venv from the package index
#   bash benchmarks/gpu/run_gpu.sh --wheelhouse DIR        # offline: preinstalled CUDA torch, wheels from DIR
#   bash benchmarks/gpu/run_gpu.sh --wheelhouse DIR --python /opt/torch/.venv/bin/python3 --models minilm
#
# Offline mode never reaches the network: it uses the preinstalled torch (never installs one) and transformers,
# removes the CPU onnxruntime, installs onnxruntime-gpu and whatever else is missing from DIR with
# --no-index --no-deps (split wheels, DIR/NAME.whl.partNN, are joined first), then checks that the CUDA provider
# really starts before measuring. Prepare DIR elsewhere with benchmarks/gpu/wheelhouse.py.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${VENV:-$REPO/.venv-gpu}"
OUT="${OUT:-$REPO/benchmarks/gpu/results}"
WHEELHOUSE=""
TARGET_PYTHON="python3"
MODELS="minilm,bert-base"
while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse) WHEELHOUSE="${2:?--wheelhouse needs a directory}"; shift 2 ;;
    --python) TARGET_PYTHON="${2:?--python needs an interpreter}"; shift 2 ;;
    --models) MODELS="${2:?--models needs a list, e.g. minilm,bert-base}"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "gpu check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
START=$(date +%s)
DEADLINE=$((START + 8 * 60))

command -v nvidia-smi >/dev/null || { echo "gpu check: no nvidia-smi: this machine has no NVIDIA driver" >&2; exit 1; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

run_commands() {  # one shell-quoted command per line (printed by install.py, which is unit-tested)
  while IFS= read -r cmd; do
    echo "+ $cmd"
    eval "$cmd" || case "$cmd" in *uninstall*) ;; *) return 1 ;; esac  # removing an absent CPU onnxruntime is fine
  done < "$1"
}

if [ -n "$WHEELHOUSE" ]; then
  export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1  # belt and braces: pip must not look for an index
  PYTHON="$(command -v "$TARGET_PYTHON")" || { echo "gpu check: $TARGET_PYTHON not found" >&2; exit 1; }
  PLAN="$(mktemp)"
  "$PYTHON" "$REPO/benchmarks/gpu/install.py" offline --wheelhouse "$WHEELHOUSE" --python "$PYTHON" --repo "$REPO" > "$PLAN"
  run_commands "$PLAN"
else
  if [ ! -x "$VENV/bin/python" ]; then
    if command -v uv >/dev/null; then uv venv -q "$VENV"; else python3 -m venv "$VENV"; fi
  fi
  PYTHON="$VENV/bin/python"
  USE_UV=0; command -v uv >/dev/null && USE_UV=1
  PYTHONPATH="$REPO/benchmarks/gpu" python3 - "$PYTHON" "$REPO" "$USE_UV" <<'PY' > "$VENV/.install-commands"
import shlex, sys
from install import install_commands
for cmd in install_commands(sys.argv[1], sys.argv[2], sys.argv[3] == "1"):
    print(shlex.join(cmd))
PY
  run_commands "$VENV/.install-commands"
fi
echo "installed in $(( $(date +%s) - START ))s"

# TensorRT's shared libraries ship inside the tensorrt wheels (when present); the loader must see them first.
TRT_LIBS="$("$PYTHON" -c 'import os, tensorrt_libs; print(os.path.dirname(tensorrt_libs.__file__))' 2>/dev/null || true)"
export LD_LIBRARY_PATH="${TRT_LIBS:+$TRT_LIBS:}${LD_LIBRARY_PATH:-}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

# The driver checks that CUDAExecutionProvider really starts (no silent CPU fallback) and writes gpu-summary.*
# in every case. `timeout` backs up its own deadline: SIGINT first (it writes what it has), SIGKILL 15 s later.
LEFT=$(( DEADLINE - $(date +%s) ))
[ "$LEFT" -gt 30 ] || { echo "gpu check: the install used the whole 8 minutes" >&2; exit 1; }
set +e
timeout --signal=INT --kill-after=15 "$LEFT" env PYTHONPATH="$REPO/benchmarks${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m gpu.driver --out "$OUT" --deadline "$DEADLINE" \
  --models "$MODELS"
CODE=$?
set -e
echo "gpu check finished in $(( $(date +%s) - START ))s (exit $CODE); results in $OUT"
exit "$CODE"
