#!/usr/bin/env bash
# A real Triton Inference Server for the tests, on a CPU-only machine: Triton 2.51's tritonserver binary and Python
# backend, unpacked from the nvidia-pytriton wheel into DIR (`make tritonserver`). The wheel is only unpacked, never
# installed (it pins numpy<2). Its Python backend stub is built against numpy 1 (pybind11 before numpy 2), so a
# numpy<2 of its own goes to DIR/numpy1, for `onnxformer triton --backend python --python-path DIR/numpy1`.
# Run it:  LD_LIBRARY_PATH=DIR/libs DIR/server/bin/tritonserver --backend-directory=DIR/server/backends \
#            --model-repository=REPO
set -euo pipefail
DIR=${1:?usage: fetch_tritonserver.sh DIR [PYTHON]}
PY=${2:-python3}
VERSION=0.7.0
mkdir -p "$DIR/.wheel"
"$PY" -m pip download -q --no-deps --only-binary=:all: "nvidia-pytriton==$VERSION" -d "$DIR/.wheel"
STAGE=$(mktemp -d "$DIR/.stage-XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
"$PY" - "$DIR"/.wheel/nvidia_pytriton-"$VERSION"-*.whl "$STAGE" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        if info.filename.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/")):
            z.extract(info, sys.argv[2])
PY
PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
SERVER="$STAGE/pytriton/tritonserver"
STUB="$SERVER/python_backend_stubs/$PYVER/triton_python_backend_stub"
[ -f "$STUB" ] || { echo "nvidia-pytriton $VERSION has no Python backend stub for Python $PYVER" >&2; exit 1; }
cp "$STUB" "$SERVER/backends/python/"
chmod +x "$SERVER/bin/tritonserver" "$SERVER/backends/python/triton_python_backend_stub"
"$PY" -m pip install -q --no-deps --only-binary=:all: --target "$STAGE/numpy1" "numpy<2"
rm -rf "$DIR/server" "$DIR/libs" "$DIR/numpy1"
mv "$STAGE/nvidia_pytriton.libs" "$DIR/libs"
mv "$STAGE/numpy1" "$DIR/numpy1"
mv "$SERVER" "$DIR/server"  # last: the Makefile's target
echo "tritonserver (Python $PYVER stub): LD_LIBRARY_PATH=$DIR/libs $DIR/server/bin/tritonserver --backend-directory=$DIR/server/backends"
