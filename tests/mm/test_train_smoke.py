"""Smoke runs of the real configs on the tiny digits data: train a few iterations, evaluate with the real
metrics (COCO bbox + segm via pycocotools, mIoU), resume, and re-evaluate the saved checkpoint with tools/test.py.

The configs are the ones under configs/ with --tiny-data (backbones.mm.tiny): same model classes, a narrowed
FocalNet (embed_dim 16, one block per stage), 128-px images, compiled mmcv ops (RoIAlign, NMS) on CPU.
"""

from pathlib import Path

import pytest

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")
pytest.importorskip("backbones.models.focalnet")

from backbones.mm import runner  # noqa: E402

pytestmark = pytest.mark.mm  # the runs over ~30 s on 2 cores are also marked slow

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MASK_RCNN = str(CONFIGS / "det" / "mask-rcnn_focalnet-t-srf_fpn_1x_coco.py")
RETINANET = str(CONFIGS / "det" / "retinanet_focalnet-t-srf_fpn_1x_coco.py")
UPERNET = str(CONFIGS / "seg" / "upernet_focalnet-t-srf_8xb2-160k_ade20k-512x512.py")


def _check_coco(metrics: dict, kinds: tuple[str, ...]) -> None:
    for kind in kinds:
        for key in ("mAP", "mAP_50", "mAP_75"):
            value = metrics[f"coco/{kind}_{key}"]
            assert 0.0 <= value <= 1.0, (kind, key, value)


@pytest.mark.slow
def test_mask_rcnn_trains_and_evaluates(tiny_data, tmp_path):
    import mmcv.ops

    work = str(tmp_path / "mask-rcnn")
    run = runner.main([MASK_RCNN, "--tiny-data", tiny_data, "--work-dir", work,
                       "--cfg-options", "train_dataloader.dataset.indices=6"])
    assert run.iter == 3
    roi_layer = run.model.roi_head.bbox_roi_extractor.roi_layers[0]
    assert isinstance(roi_layer, mmcv.ops.RoIAlign) and not roi_layer.use_torchvision
    metrics = runner.test_main([MASK_RCNN, f"{work}/epoch_1.pth", "--tiny-data", tiny_data,
                                "--work-dir", str(tmp_path / "test")])
    _check_coco(metrics, ("bbox", "segm"))


def test_retinanet_trains_and_evaluates(tiny_data, tmp_path):
    work = str(tmp_path / "retinanet")
    run = runner.main([RETINANET, "--tiny-data", tiny_data, "--work-dir", work,
                       "--cfg-options", "train_dataloader.dataset.indices=4"])
    assert run.iter == 2
    hub = run.message_hub  # the validation at the end of the epoch, as logged
    metrics = {k[len("val/"):]: v.current() for k, v in hub.log_scalars.items() if k.startswith("val/coco/")}
    _check_coco(metrics, ("bbox",))
    assert "coco/segm_mAP" not in metrics


def test_upernet_trains_resumes_and_evaluates(tiny_data, tmp_path):
    work = str(tmp_path / "upernet")
    run = runner.main([UPERNET, "--tiny-data", tiny_data, "--work-dir", work,
                       "--cfg-options", "train_cfg.max_iters=2", "train_cfg.val_interval=2",
                       "default_hooks.checkpoint.interval=2"])
    assert run.iter == 2 and Path(work, "iter_2.pth").is_file()
    # --resume (no path): the latest checkpoint of the work dir; continue to 3 iterations.
    run = runner.main([UPERNET, "--tiny-data", tiny_data, "--work-dir", work, "--resume",
                       "--cfg-options", "train_cfg.max_iters=3", "train_cfg.val_interval=3",
                       "default_hooks.checkpoint.interval=3"])
    assert run.iter == 3 and Path(work, "iter_3.pth").is_file()
    metrics = runner.test_main([UPERNET, f"{work}/iter_3.pth", "--tiny-data", tiny_data,
                                "--work-dir", str(tmp_path / "test")])
    assert set(metrics) >= {"mIoU", "aAcc", "mAcc"}
    assert 0.0 <= metrics["mIoU"] <= 100.0


@pytest.mark.slow
def test_cpu_ddp_two_processes(tiny_data, tmp_path):
    """--launcher pytorch under torchrun on CPU: gloo process group, SyncBN -> BN, DDP without device_ids."""
    import os
    import subprocess
    import sys

    work = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "backbones.mm.runner", UPERNET, "--launcher", "pytorch", "--tiny-data", tiny_data,
           "--work-dir", str(work), "--cfg-options", "train_cfg.max_iters=1", "train_cfg.val_interval=1",
           "default_hooks.checkpoint.interval=1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = next(work.glob("*/*.log")).read_text()
    assert "Distributed training: True" in log and "GPU number: 2" in log  # mmengine's name for world size
    assert "'backend': 'gloo'" in log
    assert "CPU run: SyncBN -> BN" in log and "mIoU" in log
    assert (work / "iter_1.pth").is_file()


# ------------------------------------------------------------------ DINO and Mask2Former (TransNeXt, 5 scales)
DINO = str(CONFIGS / "det" / "dino-5scale_transnext-t_8xb2-12e_coco.py")
MASK2FORMER = str(CONFIGS / "seg" / "mask2former_transnext-t_8xb2-160k_ade20k-512x512.py")


def _losses(run) -> list[float]:
    values, _counts = run.message_hub.get_scalar("train/loss").data
    return [float(v) for v in values]


def _odd_size_test_step(run, sample):
    """One 197x253 image through the data preprocessor (no padding to a multiple of 32 for DINO) and the model."""
    import torch

    x = torch.randint(0, 255, (3, 197, 253), dtype=torch.uint8)
    sample.set_metainfo(dict(img_shape=(197, 253), ori_shape=(197, 253), pad_shape=(197, 253),
                             scale_factor=(1.0, 1.0), img_path="odd.jpg"))
    run.model.eval()
    return run.model.test_step(dict(inputs=[x], data_samples=[sample]))[0]


@pytest.mark.slow
def test_dino_trains_evaluates_and_loads_an_official_layout_file(tiny_data, tmp_path):
    """24 iterations (12 images, 4 epochs) of the real DINO config, narrowed; COCO bbox metric; the checkpoint
    renamed to the official TransNeXt DINO layout evaluates to the same metrics through tools/test.py."""
    import torch
    from dense_official_layouts import transnext_official, with_official_backbone
    from mmdet.structures import DetDataSample

    work = str(tmp_path / "dino")
    run = runner.main([DINO, "--tiny-data", tiny_data, "--work-dir", work, "--cfg-options",
                       "train_dataloader.dataset.indices=12", "train_cfg.max_epochs=4", "train_cfg.val_interval=4",
                       "default_hooks.checkpoint.interval=4"])
    assert run.iter == 24 and type(run.model).__name__ == "DINO"
    losses = _losses(run)
    assert sum(losses[-4:]) / 4 < 0.95 * sum(losses[:4]) / 4, losses
    logged = {k[len("val/"):]: v.current() for k, v in run.message_hub.log_scalars.items()
              if k.startswith("val/coco/")}
    _check_coco(logged, ("bbox",))
    result = _odd_size_test_step(run, DetDataSample())
    assert result.pred_instances.bboxes.shape[1] == 4 and len(result.pred_instances) > 0

    ckpt = torch.load(f"{work}/epoch_4.pth", map_location="cpu", weights_only=False)
    official = {"meta": {"mmdet_version": "3.0.0"}, "state_dict": with_official_backbone(transnext_official)(
        ckpt["state_dict"])}
    assert any(k.startswith("backbone.block1.0.attn.") for k in official["state_dict"])
    torch.save(official, tmp_path / "official.pth")
    ours = runner.test_main([DINO, f"{work}/epoch_4.pth", "--tiny-data", tiny_data,
                             "--work-dir", str(tmp_path / "t1")])
    theirs = runner.test_main([DINO, str(tmp_path / "official.pth"), "--tiny-data", tiny_data,
                               "--work-dir", str(tmp_path / "t2")])
    assert ours == theirs and "coco/bbox_mAP" in theirs


@pytest.mark.slow
def test_mask2former_trains_and_evaluates(tiny_data, tmp_path):
    """30 iterations of the real Mask2Former config, narrowed; mIoU; an odd-sized image end to end."""
    from mmseg.structures import SegDataSample

    work = str(tmp_path / "m2f")
    run = runner.main([MASK2FORMER, "--tiny-data", tiny_data, "--work-dir", work, "--cfg-options",
                       "train_cfg.max_iters=30", "train_cfg.val_interval=30", "default_hooks.checkpoint.interval=30"])
    assert run.iter == 30 and run.model.decode_head.__class__.__name__ == "Mask2FormerHead"
    losses = _losses(run)
    assert sum(losses[-5:]) / 5 < 0.99 * sum(losses[:5]) / 5, losses
    miou = run.message_hub.get_scalar("val/mIoU").current()
    assert 0.0 <= miou <= 100.0
    result = _odd_size_test_step(run, SegDataSample())
    assert tuple(result.pred_sem_seg.data.shape[-2:]) == (197, 253)
