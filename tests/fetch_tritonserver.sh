#!/usr/bin/env bash
# Fetch Triton Inference Server's binary (with its Python backend) out of the nvidia-pytriton wheel, into DIR.
# The wheel is only unpacked, never installed: it pins numpy<2.
set -euo pipefail
DIR=${1:?usage: fetch_tritonserver.sh DIR [PYTHON]}
PY=${2:-python3}
VERSION=0.7.0
WHEELS="$DIR/.wheel"
mkdir -p "$WHEELS"
"$PY" -m pip download -q --no-deps --only-binary=:all: "nvidia-pytriton==$VERSION" -d "$WHEELS"
STAGE=$(mktemp -d "$DIR/.stage-XXXXXX")
"$PY" - "$WHEELS"/nvidia_pytriton-"$VERSION"-*.whl "$STAGE" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        if info.filename.startswith(("pytriton/tritonserver/", "nvidia_pytriton.libs/")):
            z.extract(info, sys.argv[2])
PY
PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
STUB="$STAGE/pytriton/tritonserver/python_backend_stubs/$PYVER/triton_python_backend_stub"
[ -f "$STUB" ] || { echo "nvidia-pytriton $VERSION has no Python backend stub for Python $PYVER" >&2; exit 1; }
cp "$STUB" "$STAGE/pytriton/tritonserver/backends/python/"
chmod +x "$STAGE/pytriton/tritonserver/bin/tritonserver" "$STAGE/pytriton/tritonserver/backends/python/triton_python_backend_stub"
rm -rf "$DIR/server" "$DIR/libs"
mv "$STAGE/pytriton/tritonserver" "$DIR/server"
mv "$STAGE/nvidia_pytriton.libs" "$DIR/libs"
rm -rf "$STAGE"
echo "tritonserver: $DIR/server/bin/tritonserver (LD_LIBRARY_PATH=$DIR/libs, --backend-directory=$DIR/server/backends)"
