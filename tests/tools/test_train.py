"""tools/train.py and tools/validate.py end to end on scikit-learn's digits, with a tiny timm model."""

from __future__ import annotations

import csv
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from tools_testlib import ROOT, subprocess_env, write_recipe


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_train_one_epoch_then_validate(tmp_path, train_tool, validate_tool):
    recipe = write_recipe(tmp_path / "tiny.yaml")
    out = tmp_path / "run"
    result = train_tool.main([recipe, "--output", str(out)])

    for name in ("last.pth.tar", "model_best.pth.tar", "checkpoint-0.pth.tar", "metrics.csv", "metrics.png",
                 "steps.csv", "config.yaml", "train.log"):
        assert (out / name).is_file(), name
    assert (out / "metrics.png").stat().st_size > 1000
    rows = _rows(out / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["0"]
    assert set(rows[0]) == {"epoch", "train_loss", "eval_loss", "top1", "top5", "lr", "time"}
    assert len(_rows(out / "steps.csv")) == 1437 // 32
    top1 = float(rows[0]["top1"])
    assert top1 > 50.0  # one epoch already learns (chance is 10%)
    assert result["best_metric"] == pytest.approx(top1)

    figures = validate_tool.main([recipe, "--checkpoint", str(out / "model_best.pth.tar")])
    assert figures["images"] == 360 and figures["weights"] == "model"
    assert figures["top1"] == pytest.approx(top1, abs=1e-9)
    assert figures["loss"] == pytest.approx(float(rows[0]["eval_loss"]), rel=1e-5)
    assert (out / "model_best_val.json").is_file()


def test_resume_continues_exactly(tmp_path, train_tool):
    """2 epochs straight == 1 epoch, then resume (from the epoch checkpoint and from mid-epoch recoveries).

    Random crops, colour jitter, mixup, drop path and an EMA all draw from the RNGs the checkpoint restores.
    """
    recipe = write_recipe(
        tmp_path / "tiny.yaml", epochs=2, steps_per_epoch=6, batch_size=16, mixup=0.2, drop_path=0.1,
        model_ema=True, model_ema_decay=0.9, recovery_interval=4, warmup_epochs=1, warmup_lr=1e-4,
    )
    straight = tmp_path / "straight"
    train_tool.main([recipe, "--output", str(straight)])
    steps = {int(r["step"]): float(r["loss"]) for r in _rows(straight / "steps.csv")}
    assert sorted(steps) == list(range(1, 13))
    assert (straight / "recovery-0-3.pth.tar").is_file() and (straight / "recovery-1-3.pth.tar").is_file()

    cases = {
        "epoch": (straight / "checkpoint-0.pth.tar", range(7, 13)),
        "mid_epoch_0": (straight / "recovery-0-3.pth.tar", range(5, 13)),
        "mid_epoch_1": (straight / "recovery-1-3.pth.tar", range(11, 13)),
    }
    for name, (ckpt, expected_steps) in cases.items():
        out = tmp_path / name
        train_tool.main([recipe, "--output", str(out), "--resume", str(ckpt)])
        resumed = {int(r["step"]): float(r["loss"]) for r in _rows(out / "steps.csv")}
        assert sorted(resumed) == list(expected_steps), name
        for step in expected_steps:
            assert resumed[step] == pytest.approx(steps[step], abs=1e-6), (name, step)
        a, b = _weights(straight / "last.pth.tar"), _weights(out / "last.pth.tar")
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=f"{name}: {key}")
        ema_a = torch.load(straight / "last.pth.tar", weights_only=True)["state_dict_ema"]
        ema_b = torch.load(out / "last.pth.tar", weights_only=True)["state_dict_ema"]
        for key in ema_a:
            torch.testing.assert_close(ema_b[key], ema_a[key], rtol=0, atol=1e-6, msg=f"{name}: EMA {key}")
    # the straight run's epoch rows, and the resumed run's, agree
    assert _rows(tmp_path / "epoch" / "metrics.csv")[0]["top1"] == _rows(straight / "metrics.csv")[1]["top1"]


def test_resume_auto_in_place(tmp_path, train_tool):
    recipe = write_recipe(tmp_path / "tiny.yaml", epochs=1, steps_per_epoch=2, batch_size=16)
    out = tmp_path / "run"
    train_tool.main([recipe, "--output", str(out), "--resume", "auto"])  # nothing to resume: a fresh start
    train_tool.main([recipe, "--output", str(out), "--resume", "auto", "epochs=2"])  # the schedule changes: warned
    assert [r["epoch"] for r in _rows(out / "metrics.csv")] == ["0", "1"]
    assert [r["step"] for r in _rows(out / "steps.csv")] == ["1", "2", "3", "4"]


@pytest.mark.slow
def test_distributed_matches_single_process(tmp_path):
    """torchrun 2 processes x batch 8 (gloo) == 1 process x batch 16: same global batches, averaged gradients."""
    recipe = write_recipe(  # test_vit: LayerNorm only (BatchNorm statistics would differ per process)
        tmp_path / "tiny.yaml", model="test_vit", model_kwargs={"img_size": 16, "patch_size": 4}, img_size=16,
        dataset_kwargs={"image_size": 16}, no_aug=True, smoothing=0.0, opt="sgd", lr=0.05, momentum=0.9,
        epochs=1, steps_per_epoch=3, validation_batch_size=64,
    )
    env = subprocess_env()
    single, multi = tmp_path / "single", tmp_path / "ddp"
    train = str(ROOT / "tools" / "train.py")
    subprocess.run([sys.executable, train, recipe, "--output", str(single), "batch_size=16"],
                   check=True, env=env, cwd=tmp_path, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", train,
                    recipe, "--output", str(multi), "batch_size=8"], check=True, env=env, cwd=tmp_path, timeout=300)
    a, b = _weights(single / "last.pth.tar"), _weights(multi / "last.pth.tar")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=key)
    losses_a = [float(r["loss"]) for r in _rows(single / "steps.csv")]
    losses_b = [float(r["loss"]) for r in _rows(multi / "steps.csv")]
    assert losses_b == pytest.approx(losses_a, abs=1e-5)
    eval_a, eval_b = _rows(single / "metrics.csv")[0], _rows(multi / "metrics.csv")[0]
    assert float(eval_b["top1"]) == pytest.approx(float(eval_a["top1"]))  # sharded eval counts each image once


def test_bad_recipe_key(tmp_path, train_tool):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model: test_vit\ndataset: digits\nlearning_rate: 0.1\n")
    with pytest.raises(SystemExit, match=r"unknown recipe key 'learning_rate'"):
        train_tool.main([str(recipe), "--output", str(tmp_path / "out")])


def test_bad_override(tmp_path, train_tool):
    recipe = write_recipe(tmp_path / "tiny.yaml")
    with pytest.raises(SystemExit, match=r"unknown recipe key 'bach_size'.*did you mean batch_size"):
        train_tool.main([recipe, "bach_size=8"])
    with pytest.raises(SystemExit, match=r"'lr' must be a number"):
        train_tool.main([recipe, "--set", "lr=fast"])


def test_unknown_model(tmp_path, train_tool):
    recipe = write_recipe(tmp_path / "tiny.yaml", model="test_vitt")
    with pytest.raises(SystemExit, match=r"unknown model name 'test_vitt'.*did you mean test_vit"):
        train_tool.main([recipe, "--output", str(tmp_path / "out")])


def test_validate_missing_checkpoint(tmp_path, validate_tool):
    recipe = write_recipe(tmp_path / "tiny.yaml")
    with pytest.raises(SystemExit, match="checkpoint not found"):
        validate_tool.main([recipe, "--checkpoint", str(tmp_path / "nope.pth.tar")])


def test_py_config_goes_to_mm_runner(tmp_path, train_tool, monkeypatch):
    seen = {}
    fake = types.ModuleType("backbones.mm.runner")
    fake.main = lambda argv: seen.setdefault("argv", argv)
    monkeypatch.setitem(sys.modules, "backbones.mm.runner", fake)
    argv = [str(tmp_path / "mask-rcnn_x_fpn_1x_coco.py"), "--work-dir", str(tmp_path)]
    train_tool.main(argv)
    assert seen["argv"] == argv


def test_py_config_without_mm_runner(tmp_path, train_tool, monkeypatch):
    monkeypatch.setitem(sys.modules, "backbones.mm.runner", None)  # makes the import fail
    with pytest.raises(SystemExit, match="backbones.mm.runner"):
        train_tool.main([str(tmp_path / "upernet_x_ade20k.py")])


def test_train_step_adds_the_moh_balancing_loss(tmp_path, train_tool, monkeypatch):
    """A MoH model's training loss is the task loss plus 0.01 x the mean balancing loss of its routed layers."""
    from backbones.blocks import HeadMixture

    seen = []
    add = train_tool.add_auxiliary_loss

    def spy(model, loss):
        aux = [m.aux_loss.detach() for m in model.modules() if isinstance(m, HeadMixture) and m.aux_loss is not None]
        total = add(model, loss)
        seen.append((loss.detach(), torch.stack(aux), total.detach()))
        return total

    monkeypatch.setattr(train_tool, "add_auxiliary_loss", spy)
    moh = [dict(shared_heads=2, routed_heads=0), dict(shared_heads=1, routed_heads=2),
           dict(shared_heads=0, routed_heads=2), dict(shared_heads=2, routed_heads=2)]
    kwargs = dict(embed_dims=[16, 32, 48, 64], depths=[1, 1, 1, 1], num_heads=[2, 4, 3, 4], moh=moh)
    recipe = write_recipe(tmp_path / "moh.yaml", model="moh_transnext_small_75", model_kwargs=kwargs,
                          steps_per_epoch=2, batch_size=16, color_jitter=0.0)
    train_tool.main([recipe, "--output", str(tmp_path / "run")])
    assert len(seen) == 2
    logged = [float(r["loss"]) for r in _rows(tmp_path / "run" / "steps.csv")]
    for (task, aux, total), value in zip(seen, logged):
        assert aux.numel() == 3 and (aux > 0).all()  # the three routed stages, official coefficient 0.01
        torch.testing.assert_close(total, task + 0.01 * aux.mean())
        assert value == pytest.approx(total.item(), rel=1e-6)
