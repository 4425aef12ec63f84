"""backbones.mm.runner: the CPU adaptation of configs and the command line (no training here)."""

from pathlib import Path

import pytest

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

from backbones.mm.runner import cpu_adapt, prepare_config  # noqa: E402

pytestmark = pytest.mark.mm

UPERNET = str(Path(__file__).resolve().parents[2] / "configs/seg/upernet_focalnet-t-srf_8xb2-160k_ade20k-512x512.py")


def test_cpu_adapt():
    from mmengine.config import Config

    cfg = Config.fromfile(UPERNET)
    cfg.launcher = "pytorch"
    cfg.optim_wrapper.type = "AmpOptimWrapper"
    cfg.optim_wrapper.loss_scale = "dynamic"
    assert cfg.model.decode_head.norm_cfg.type == "SyncBN"
    notes = cpu_adapt(cfg, amp=True)
    assert cfg.model.decode_head.norm_cfg.type == "BN" and cfg.model.auxiliary_head.norm_cfg.type == "BN"
    assert cfg.env_cfg.dist_cfg.backend == "gloo"
    assert cfg.optim_wrapper.type == "OptimWrapper" and "loss_scale" not in cfg.optim_wrapper
    assert cfg.model_wrapper_cfg.device_ids is None
    assert any("--amp ignored" in n for n in notes) and any("SyncBN -> BN" in n for n in notes)


def test_cpu_adapt_drops_runner_sync_bn():
    """BiFormer / HaloNet seg configs set sync_bn='torch' (the Runner converts every BatchNorm): not on CPU."""
    from mmengine.config import Config

    cfg = Config.fromfile("configs/seg/fpn_biformer-s_8xb4-80k_ade20k-512x512.py")
    assert cfg.sync_bn == "torch"
    notes = cpu_adapt(cfg)
    assert cfg.sync_bn is None and any("sync_bn='torch' dropped" in n for n in notes)


def test_prepare_config_options_and_work_dir(tiny_data):
    cfg, notes = prepare_config(UPERNET, tiny_data=tiny_data, cfg_options={"train_cfg.max_iters": 3})
    assert cfg.train_cfg.max_iters == 3  # --cfg-options apply after --tiny-data
    assert cfg.work_dir == "work_dirs/upernet_focalnet-t-srf_8xb2-160k_ade20k-512x512"
    assert cfg.model.backbone.model_kwargs == dict(focal_windows=9, embed_dim=16, depths=(1, 1, 1, 1))
    assert cfg.model.decode_head.in_channels == [16, 32, 64, 128] and cfg.model.auxiliary_head.in_channels == 64
    assert cfg.model.backbone.init_cfg is None
    assert notes[0].startswith("--tiny-data")


def test_cli_errors():
    from backbones.mm.runner import main, test_main

    with pytest.raises(SystemExit):
        main(["--launcher", "mpi", UPERNET])
    with pytest.raises(SystemExit):
        test_main([UPERNET])  # no checkpoint
