#!/usr/bin/env bash
# Environment set-up for this repository, in layers a user asks for:
#
#   tools/setup_env.sh               timm side: venv, torch + torchvision (pinned), timm, this package (editable)
#                                    with the onnx extra -- create_model, tools/train.py, validate, benchmark, export
#   tools/setup_env.sh mm            + the OpenMMLab stack (mmengine, mmcv 2.1.0 with compiled ops, mmdet, mmseg)
#   tools/setup_env.sh dev           + test and lint tools (pytest, ruff, shellcheck, ...); combine: "mm dev"
#   tools/setup_env.sh mmcv-wheel    only build (or find) the mmcv wheel in the cache and print its path
#
# Environment: VENV (default <repo>/.venv; relative paths are taken from the current directory), PYTHON (the
# interpreter that creates the venv), BACKBONES_CACHE (wheel cache, default ~/.cache/backbones/wheels),
# BACKBONES_WHEELHOUSE (prebuilt wheels, default <repo>/../shared/wheels), BACKBONES_SETUP_LOGS (the steps'
# logs, default <venv>/setup-logs), MMCV_WITH_OPS (1: build mmcv's compiled ops, the default; 0: the pure-Python
# part only, about a minute -- what the tests use), MAX_JOBS (parallel compile jobs, default 2).
#
# Idempotent: a stamp in the venv records what was installed and from which pins; a second run returns in
# seconds. mmcv 2.1.0 is published only as source: it is built once per (torch, Python) pair and the wheel is
# cached; a matching prebuilt wheel in the wheelhouse is used instead when there is one.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
VENV="$(abspath "${VENV:-$ROOT/.venv}")"
PYTHON="${PYTHON:-python3}"
CACHE="$(abspath "${BACKBONES_CACHE:-$HOME/.cache/backbones/wheels}")"
WHEELHOUSE="$(abspath "${BACKBONES_WHEELHOUSE:-$ROOT/../shared/wheels}")"
MMCV_WITH_OPS="${MMCV_WITH_OPS:-1}"
CONSTRAINTS="$ROOT/constraints.txt"
LOGS="$(abspath "${BACKBONES_SETUP_LOGS:-$VENV/setup-logs}")"
# Our constraints replace any machine-wide pip constraint file (which may cap torch below our pin). They are
# passed with -c: pip splits PIP_CONSTRAINT at whitespace, which breaks a clone whose path has a space.
export PIP_CONSTRAINT=""
export PIP_DISABLE_PIP_VERSION_CHECK=1

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
pin() { sed -n "s/^$1==\([^ ]*\).*/\1/p" "$CONSTRAINTS"; }
if [[ -t 1 ]]; then PROGRESS=on; else PROGRESS=off; fi

# ---- what to install ------------------------------------------------------------------------------------------
WANT_MM=0 WANT_DEV=0 WHEEL_ONLY=0
for arg in "$@"; do
  case "$arg" in
    mm) WANT_MM=1 ;;
    dev) WANT_DEV=1 ;;
    mmcv-wheel) WHEEL_ONLY=1 ;;
    -h | --help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tools/setup_env.sh: unknown argument '$arg' (expected: mm, dev, mmcv-wheel)" >&2; exit 2 ;;
  esac
done

# ---- steps: each logs to a file; a failure names the step, the log and how to retry ---------------------------
CURRENT_STEP=""
on_error() {
  local rc=$?
  if [[ -n "$CURRENT_STEP" ]]; then
    printf '\n\033[1;31m[setup] step failed: %s\033[0m (exit %s)\n' "$CURRENT_STEP" "$rc" >&2
    if [[ -n "${STEP_LOG:-}" && -f "$STEP_LOG" ]]; then
      echo "[setup] last lines of its log, $STEP_LOG:" >&2
      tail -n 25 "$STEP_LOG" | sed 's/^/    /' >&2
    fi
    echo "[setup] retry with the same command: finished steps are skipped (and a built mmcv wheel is cached)." >&2
  fi
  exit "$rc"
}
trap on_error ERR

# run_step NAME LOGNAME CMD...: run CMD with its output in $LOGS/LOGNAME.log; on a terminal the output is shown too.
run_step() {
  CURRENT_STEP="$1"
  STEP_LOG="$LOGS/$2.log"
  shift 2
  mkdir -p "$LOGS"
  if [[ -t 1 ]]; then
    "$@" 2>&1 | tee "$STEP_LOG"
  else
    "$@" >"$STEP_LOG" 2>&1
  fi
  CURRENT_STEP=""
}

stamp_value() {
  { cat "$CONSTRAINTS" "$ROOT/setup.cfg" "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}"; echo "$ROOT"; } \
    | sha256sum | cut -d' ' -f1
}
# One stamp per layer: "core", "mm", "dev". A layer is up to date when its stamp matches the current pins.
stamp_ok() { [[ -f "$VENV/.backbones-setup-$1" && "$(cat "$VENV/.backbones-setup-$1")" == "$(stamp_value)" ]]; }
write_stamp() { stamp_value >"$VENV/.backbones-setup-$1"; }

if [[ "$WHEEL_ONLY" == 0 && -x "$VENV/bin/python" ]] && stamp_ok core \
  && { [[ "$WANT_MM" == 0 ]] || stamp_ok mm; } && { [[ "$WANT_DEV" == 0 ]] || stamp_ok dev; }; then
  log "environment up to date ($VENV)"
  exit 0
fi

# ---- core: venv, torch, torchvision ---------------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment $VENV"
  CURRENT_STEP="create the virtual environment"
  "$PYTHON" -m venv "$VENV"
  CURRENT_STEP=""
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --progress-bar "$PROGRESS" -c "$CONSTRAINTS")

TORCH_VERSION="$(pin torch)"
TV_VERSION="$(pin torchvision)"
if ! "$PY" -c "import torch, torchvision, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" \
  2>/dev/null; then
  log "installing torch $TORCH_VERSION + torchvision $TV_VERSION (several GB on a first install, a few minutes; log: $LOGS/torch.log)"
  run_step "install torch $TORCH_VERSION + torchvision $TV_VERSION" torch \
    "${PIP[@]}" "torch==$TORCH_VERSION" "torchvision==$TV_VERSION"
fi
# torch pulls a setuptools without pkg_resources; mmcv's setup.py needs pkg_resources.
run_step "install build tools (setuptools, wheel, ninja)" build-tools \
  "${PIP[@]}" "setuptools==$(pin setuptools)" wheel packaging ninja

# ---- mmcv: the cached wheel, the shared prebuilt one, or a build from source -----------------------------------
PYTAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
MMCV_VERSION="$(pin mmcv)"
KEY_DIR="$CACHE/torch-$TORCH_VERSION-$PYTAG"
[[ "$MMCV_WITH_OPS" == 1 ]] || KEY_DIR="$KEY_DIR-noops"

# Without the compiled ops mmcv's setup.py names its wheel mmcv_lite (only ever in a -noops cache folder).
find_wheel() { find "$1" -maxdepth 1 -name "mmcv*-$MMCV_VERSION-*.whl" 2>/dev/null | sort | head -n 1; }

# Heartbeat while mmcv compiles: elapsed minutes and ninja's [done/total] count from the build log.
build_progress() {
  local start=$SECONDS
  while sleep 60; do
    local done_total
    # pip -v indents the build's output: ninja's "[12/77] c++ ..." lines start with blanks.
    done_total="$(grep -o '^ *\[[0-9]*/[0-9]*\]' "$1" 2>/dev/null | tail -n 1 | tr -d ' ' || true)"
    log "mmcv build: $(((SECONDS - start) / 60)) min${done_total:+, compiled $done_total}; log: $1"
  done
}

build_mmcv() {
  local build src
  build="$(mktemp -d)"
  if [[ "$MMCV_WITH_OPS" == 1 ]]; then
    log "building mmcv $MMCV_VERSION from source against torch $TORCH_VERSION: about 30-40 min on 2 cores, once;"
    log "the wheel is cached in $KEY_DIR (log: $LOGS/mmcv-build.log)"
  else
    log "building mmcv $MMCV_VERSION from source without compiled ops (MMCV_WITH_OPS=0, about a minute)"
  fi
  run_step "download the mmcv $MMCV_VERSION source" mmcv-download \
    env -u MMCV_WITH_OPS "$PY" -m pip download -c "$CONSTRAINTS" --no-deps --no-binary :all: --no-build-isolation \
    -d "$build" "mmcv==$MMCV_VERSION"
  CURRENT_STEP="unpack the mmcv source"
  tar -xzf "$build/mmcv-$MMCV_VERSION.tar.gz" -C "$build"
  src="$build/mmcv-$MMCV_VERSION"
  # torch >= 2.14 headers need C++20; mmcv 2.1.0 hard-codes c++14/17.
  CURRENT_STEP="patch mmcv's setup.py for C++20"
  sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' -e 's#/std:c++17#/std:c++20#g' "$src/setup.py"
  grep -q -- '-std=c++20' "$src/setup.py"
  log "patched mmcv's setup.py for C++20 ($(grep -c -- '-std=c++20' "$src/setup.py") lines)"
  CURRENT_STEP=""
  mkdir -p "$LOGS"
  : >"$LOGS/mmcv-build.log"
  build_progress "$LOGS/mmcv-build.log" &
  local heartbeat=$!
  # The heartbeat must not outlive a failed build.
  trap 'kill "$heartbeat" 2>/dev/null || true; on_error' ERR
  # pip wheel runs in the source tree (mmcv's setup.py reads its files relative to it): every path is absolute.
  run_step "build the mmcv $MMCV_VERSION wheel" mmcv-build \
    env -C "$src" MMCV_WITH_OPS="$MMCV_WITH_OPS" FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
    "$PY" -m pip wheel -v -c "$CONSTRAINTS" --no-deps --no-build-isolation -w "$KEY_DIR" .
  kill "$heartbeat" 2>/dev/null || true
  trap on_error ERR
  rm -rf "$build"
}

mmcv_wheel() {
  mkdir -p "$KEY_DIR"
  WHEEL="$(find_wheel "$KEY_DIR")"
  if [[ -n "$WHEEL" ]]; then
    log "using the cached mmcv wheel $WHEEL"
    return
  fi
  # The shared wheel was built against torch 2.15.x with the compiled ops; its README says so.
  if [[ "$MMCV_WITH_OPS" == 1 && "$TORCH_VERSION" == 2.15.* && -d "$WHEELHOUSE" ]]; then
    local shared
    shared="$(find "$WHEELHOUSE" -maxdepth 1 -name "mmcv-$MMCV_VERSION-$PYTAG-*.whl" | sort | head -n 1)"
    if [[ -n "$shared" ]]; then
      log "using the prebuilt mmcv wheel $shared"
      cp "$shared" "$KEY_DIR/"
      WHEEL="$KEY_DIR/$(basename "$shared")"
      return
    fi
  fi
  build_mmcv
  WHEEL="$(find_wheel "$KEY_DIR")"
  [[ -n "$WHEEL" ]] || { echo "[setup] the mmcv build finished but left no wheel in $KEY_DIR" >&2; exit 1; }
  log "built $WHEEL"
}

if [[ "$WHEEL_ONLY" == 1 ]]; then
  mmcv_wheel
  printf '%s\n' "$WHEEL"
  exit 0
fi

EXTRAS="onnx"
if [[ "$WANT_MM" == 1 ]]; then
  EXTRAS="$EXTRAS,mm"
  if ! "$PY" -c "import mmcv, mmcv.ops" 2>/dev/null; then
    mmcv_wheel
    log "installing $WHEEL"
    run_step "install the mmcv wheel" mmcv-install "${PIP[@]}" "$WHEEL"
  fi
fi
# Layers installed earlier stay installed: keep their extras in the editable install.
stamp_ok mm && EXTRAS="$EXTRAS,mm" || true
[[ "$WANT_DEV" == 1 ]] || ! stamp_ok dev || WANT_DEV=1
[[ "$WANT_DEV" == 0 ]] || EXTRAS="$EXTRAS,dev"
EXTRAS="$(tr ',' '\n' <<<"$EXTRAS" | sort -u | paste -sd, -)"

# Earlier versions of this repository installed under the distribution name "backbones", which another project
# owns on the package registry; drop that editable install of this clone before installing the new name.
if "$PY" -m pip show backbones 2>/dev/null | grep -qxF "Editable project location: $ROOT"; then
  run_step "uninstall the old distribution name 'backbones'" uninstall-old "$PY" -m pip uninstall -y backbones
fi
log "installing timm and attention-backbones[$EXTRAS] (editable)"
run_step "install attention-backbones[$EXTRAS]" package "${PIP[@]}" -e "${ROOT}[$EXTRAS]"

CURRENT_STEP="check the installed packages"
"$PY" - "$EXTRAS" <<'PY'
import sys

import torch, torchvision, timm  # noqa: E401

line = f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}"
if "mm" in sys.argv[1].split(","):
    import mmcv, mmcv.ops, mmdet, mmengine, mmseg  # noqa: E401, F401

    line += (f", mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, "
             f"mmseg {mmseg.__version__}")
print(f"[setup] {line}")
PY
CURRENT_STEP=""
write_stamp core
[[ ",$EXTRAS," != *",mm,"* ]] || write_stamp mm
[[ ",$EXTRAS," != *",dev,"* ]] || write_stamp dev
rm -f "$VENV/.backbones-setup"  # the single stamp of earlier versions of this script
log "done ($VENV)"
