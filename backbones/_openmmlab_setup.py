"""The OpenMMLab stack on demand: the det / seg commands install it on first use in this repository's venv.

``make demo`` and the timm side of the repository need only torch and timm. mmcv 2.1.0 is published as source
only, and building it takes about 30-40 minutes on 2 cores, so the set-up leaves the OpenMMLab layer out until a
command needs it: ``tools/train.py CONFIG.py`` and ``tools/test.py`` call :func:`require_openmmlab` first.

In the venv ``tools/setup_env.sh`` made (it leaves a stamp there), a missing stack is installed by running
``tools/setup_env.sh mm`` for that venv, and the command then starts again in a fresh interpreter. Anywhere else
(a user's own environment), or with ``BACKBONES_AUTO_SETUP=0``, the command stops with the exact way to install it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["missing_openmmlab", "require_openmmlab"]

_MODULES = ("mmengine", "mmcv", "mmdet", "mmseg")
_ROOT = Path(__file__).resolve().parent.parent
_SETUP = _ROOT / "tools" / "setup_env.sh"


def missing_openmmlab() -> list[str]:
    """The OpenMMLab packages that cannot be imported here (empty when the stack is complete)."""
    missing = [name for name in _MODULES if importlib.util.find_spec(name) is None]
    if "mmcv" not in missing and importlib.util.find_spec("mmcv._ext") is None:
        missing.append("mmcv (compiled ops: mmcv._ext)")
    return missing


def _in_project_venv() -> bool:
    return any(Path(sys.prefix, stamp).is_file() for stamp in (".backbones-setup-core", ".backbones-setup"))


def require_openmmlab(command: str) -> None:
    """Return when mmengine / mmcv (with ops) / mmdet / mmseg import; otherwise install them or explain how.

    Args:
        command: the command that needs the stack, named in the messages (e.g. ``"tools/train.py"``).
    """
    missing = missing_openmmlab()
    if not missing:
        return
    how = (
        "install it with `make setup-mm` (or `bash tools/setup_env.sh mm`) in a clone of this repository: it "
        "builds mmcv 2.1.0 from source once (about 30-40 min on 2 cores) unless a prebuilt wheel is at hand; in "
        "an environment of your own: `pip install -e \".[mm]\"` plus an mmcv 2.1.0 wheel built for your torch"
    )
    auto = os.environ.get("BACKBONES_AUTO_SETUP", "1").lower() not in ("0", "false", "no", "off")
    if not (auto and _in_project_venv() and _SETUP.is_file()):
        raise SystemExit(f"{command}: mmdet / mmseg configs need the OpenMMLab stack (missing: "
                         f"{', '.join(missing)}); {how}.")
    print(
        f"[{command}] the OpenMMLab stack is not installed yet (missing: {', '.join(missing)}); installing it now "
        f"into {sys.prefix} with tools/setup_env.sh mm. The first time this builds mmcv 2.1.0 from source "
        "(about 30-40 min on 2 cores, cached afterwards). BACKBONES_AUTO_SETUP=0 turns this off.",
        file=sys.stderr,
        flush=True,
    )
    env = dict(os.environ, VENV=sys.prefix)
    result = subprocess.run(["bash", str(_SETUP), "mm"], env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{command}: installing the OpenMMLab stack failed (exit {result.returncode}, see the "
                         f"step and log named above); {how}.")
    # Modules imported before the install would stay stale: start the command again in a fresh interpreter.
    os.execv(sys.executable, [sys.executable, *sys.argv])
