#!/usr/bin/env bash
# One-shot environment set-up: virtual environment, torch + torchvision (pinned, from the registry), timm,
# the OpenMMLab stack (mmengine, mmcv 2.1.0 with compiled ops, mmdet, mmseg) and this package (editable).
#
# Idempotent: a stamp in the venv records the hash of what was installed; a second run with unchanged
# pins returns in seconds. mmcv 2.1.0 exists only as source; it is built once per (torch, python) pair and
# the wheel is cached under $BACKBONES_CACHE (default ~/.cache/backbones/wheels). A matching prebuilt
# wheel in ../shared/wheels (or $BACKBONES_WHEELHOUSE) is used when present.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
CACHE="${BACKBONES_CACHE:-$HOME/.cache/backbones/wheels}"
WHEELHOUSE="${BACKBONES_WHEELHOUSE:-$ROOT/../shared/wheels}"
CONSTRAINTS="$ROOT/constraints.txt"
# Our constraints replace any machine-wide pip constraint file (which may cap torch below our pin).
export PIP_CONSTRAINT="$CONSTRAINTS"
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
pin() { sed -n "s/^$1==\([^ ]*\).*/\1/p" "$CONSTRAINTS"; }

stamp_value() {
  cat "$CONSTRAINTS" "$ROOT/setup.cfg" "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1
}
STAMP="$VENV/.backbones-setup"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(stamp_value)" && -x "$VENV/bin/python" ]]; then
  log "environment up to date ($VENV)"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --progress-bar off)

TORCH_VERSION="$(pin torch)"
TV_VERSION="$(pin torchvision)"
if ! "$PY" -c "import torch, torchvision, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  log "installing torch $TORCH_VERSION + torchvision $TV_VERSION (several GB on first install)"
  "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TV_VERSION"
fi
# torch pulls a setuptools without pkg_resources; mmcv's setup.py needs pkg_resources.
"${PIP[@]}" -q "setuptools==$(pin setuptools)" wheel packaging ninja

if ! "$PY" -c "import mmcv, mmcv.ops" 2>/dev/null; then
  PYTAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
  MMCV_VERSION="$(pin mmcv)"
  KEY_DIR="$CACHE/torch-$TORCH_VERSION-$PYTAG"
  mkdir -p "$KEY_DIR"
  WHEEL="$(ls "$KEY_DIR"/mmcv-"$MMCV_VERSION"-"$PYTAG"-*.whl 2>/dev/null | head -1 || true)"
  if [[ -z "$WHEEL" && -d "$WHEELHOUSE" ]]; then
    # The shared wheel was built against torch 2.15.x; its README says so. Use it only for that torch.
    if [[ "$TORCH_VERSION" == 2.15.* ]]; then
      SHARED="$(ls "$WHEELHOUSE"/mmcv-"$MMCV_VERSION"-"$PYTAG"-*.whl 2>/dev/null | head -1 || true)"
      if [[ -n "$SHARED" ]]; then
        log "using prebuilt $SHARED"
        cp "$SHARED" "$KEY_DIR/" && WHEEL="$KEY_DIR/$(basename "$SHARED")"
      fi
    fi
  fi
  if [[ -z "$WHEEL" ]]; then
    log "building mmcv $MMCV_VERSION against torch $TORCH_VERSION (CPU ops; ~30-40 min on 2 cores, once)"
    BUILD="$(mktemp -d)"
    "$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation -d "$BUILD" "mmcv==$MMCV_VERSION"
    tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # torch >= 2.14 headers need C++20; mmcv 2.1.0 hard-codes c++14/17.
    sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' -e 's#/std:c++17#/std:c++20#g' "$SRC/setup.py"
    (cd "$SRC" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
      "$PY" -m pip wheel --no-deps --no-build-isolation -w "$KEY_DIR" .)
    rm -rf "$BUILD"
    WHEEL="$(ls "$KEY_DIR"/mmcv-"$MMCV_VERSION"-*.whl | head -1)"
  fi
  log "installing $WHEEL"
  "${PIP[@]}" "$WHEEL"
fi

log "installing timm, mmengine, mmdet, mmsegmentation and backbones[mm,onnx,dev] (editable)"
"${PIP[@]}" -e "$ROOT[mm,onnx,dev]"

"$PY" - <<'PY'
import torch, torchvision, timm, mmcv, mmcv.ops, mmengine, mmdet, mmseg  # noqa: F401
print(f"[setup] torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}, "
      f"mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}")
PY
stamp_value > "$STAMP"
log "done"
