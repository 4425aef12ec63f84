"""TransNeXt det/seg configs carry the official DaiShiResearch/TransNeXt recipes (README numbers; Mask R-CNN
mmdet 2.28 and UPerNet mmseg 0.30 configs), and tiny-data smoke runs of one detection and one segmentation config
(train, evaluate with the real metric)."""

from pathlib import Path

import pytest

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

pytestmark = pytest.mark.mm

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
HF = "https://huggingface.co/DaiShiResearch/transnext-{0}-224-1k/resolve/main/transnext_{0}_224_1k.pth"
# size -> (model, drop path in the official dense backbones, channels)
SIZES = {
    "t": ("tiny", 0.4, [72, 144, 288, 576]),
    "s": ("small", 0.6, [72, 144, 288, 576]),
    "b": ("base", 0.7, [96, 192, 384, 768]),
}
DET = {"t": "49.9 box AP / 44.6 mask AP", "s": "51.1 box AP / 45.5 mask AP", "b": "51.7 box AP / 45.9 mask AP"}
SEG = {  # single-scale, multi-scale interpolated, multi-scale extrapolated
    "t": ("51.1 mIoU", "51.5 mIoU", "51.7 mIoU"),
    "s": ("52.2 mIoU", "52.5 mIoU", "52.8 mIoU"),
    "b": ("53.0 mIoU", "53.5 mIoU", "53.7 mIoU"),
}
# official DINO (detection/dino README): (levels, box AP); Mask2Former (segmentation/mask2former README): mIoU
DINO = {("t", 4): "55.1 box AP", ("t", 5): "55.7 box AP", ("s", 5): "56.6 box AP", ("b", 5): "57.1 box AP"}
M2F = {"t": "53.4 mIoU", "s": "54.1 mIoU", "b": "54.7 mIoU"}
# drop path of the official DINO / Mask2Former backbones (transnext_native.py defaults)
DENSE_DP = {"t": 0.3, "s": 0.5, "b": 0.6}
NO_DECAY = ("query_embedding", "relative_pos_bias_local", "cpb", "temperature", "norm")


def _det_path(size):
    return CONFIGS / "det" / f"mask-rcnn_transnext-{size}_fpn_1x_coco.py"


def _seg_path(size):
    return CONFIGS / "seg" / f"upernet_transnext-{size}_8xb2-160k_ade20k-512x512.py"


def _load(path):
    from mmengine.config import Config

    return Config.fromfile(str(path))


def _text(path):
    return " ".join(path.read_text().replace("#", " ").split())


def _check_backbone(cfg, size, img_size):
    name, dp, _ = SIZES[size]
    bb = cfg.model.backbone
    assert bb.type == "TimmBackboneAdapter" and bb.model_name == f"transnext_{name}"
    assert tuple(bb.out_indices) == (0, 1, 2, 3) and bb.out_norms is False  # stage norms are the outputs
    assert bb.drop_path_rate == dp and not bb.get("with_cp", False) and bb.get("frozen_stages", -1) == -1
    assert bb.model_kwargs == dict(img_size=img_size, pretrain_size=224, pos_bias_mode="interpolate")
    assert bb.init_cfg == dict(type="Pretrained", checkpoint=HF.format(name))


def _check_no_decay(cfg):
    custom = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert custom == {k: dict(decay_mult=0.0) for k in NO_DECAY}


def _dino_path(size, levels):
    return CONFIGS / "det" / f"dino-{levels}scale_transnext-{size}_8xb2-12e_coco.py"


def _m2f_path(size):
    return CONFIGS / "seg" / f"mask2former_transnext-{size}_8xb2-160k_ade20k-512x512.py"


def test_every_transnext_config_is_checked():
    found = {p.name for task in ("det", "seg") for p in (CONFIGS / task).glob("*transnext*.py")}
    assert found == ({_det_path(s).name for s in DET} | {_seg_path(s).name for s in SEG}
                     | {_dino_path(*k).name for k in DINO} | {_m2f_path(s).name for s in M2F})


def _check_dense_optimizer(cfg, names):
    """Official DINO / Mask2Former optimizer: backbone lr x0.1 except stage 4's downsample and norm; no decay on
    1-D tensors, query embeddings, local position biases, CPB MLPs, temperatures (checked on real names)."""
    from mmengine.optim import DefaultOptimWrapperConstructor

    pw = cfg.optim_wrapper.paramwise_cfg
    assert (pw.bias_decay_mult, pw.norm_decay_mult, pw.flat_decay_mult) == (0.0, 0.0, 0.0)
    ctor = DefaultOptimWrapperConstructor(dict(cfg.optim_wrapper), pw)
    keys = sorted(pw.custom_keys, key=lambda k: (-len(k), k))

    def mults(name):  # mmengine: the longest custom key contained in the name wins
        key = next((k for k in keys if k in name), None)
        return None if key is None else (pw.custom_keys[key].get("lr_mult", 1.0),
                                         pw.custom_keys[key].get("decay_mult", 1.0))

    assert ctor.base_lr == 1e-4
    for n in names:
        got = mults(n)
        if not n.startswith("backbone."):
            assert got is None or got[0] == 1.0, n
            continue
        stage4 = ".stages.3.downsample." in n or ".stages.3.norm." in n
        no_decay = n.endswith(".bias") and "learnable" not in n or any(
            k in n for k in ("query_embedding", "relative_pos_bias_local", "cpb", "temperature", "norm"))
        assert got == (1.0 if stage4 else 0.1, 0.0 if no_decay else 1.0), (n, got)


def _tiny_param_names(cfg):
    """Parameter names of the config's model with one block per stage (same naming as the full model)."""
    from mmengine.registry import init_default_scope

    cfg.model.backbone.model_kwargs = dict(cfg.model.backbone.model_kwargs, depths=(1, 1, 1, 1))
    cfg.model.backbone.init_cfg = None
    init_default_scope(cfg.default_scope)
    if cfg.default_scope == "mmdet":
        from mmdet.registry import MODELS
    else:
        from mmseg.registry import MODELS
    return [n for n, _ in MODELS.build(cfg.model).named_parameters()]


@pytest.mark.parametrize("size, levels", list(DINO))
def test_dino_recipe(size, levels):
    path = _dino_path(size, levels)
    cfg = _load(path)
    assert DINO[(size, levels)] in _text(path)
    name, _, channels = SIZES[size]
    bb = cfg.model.backbone
    assert bb.model_name == f"transnext_{name}" and bb.out_norms is False and bb.drop_path_rate == DENSE_DP[size]
    assert bb.model_kwargs == dict(img_size=800, pretrain_size=224, pos_bias_mode="interpolate")
    assert bb.init_cfg == dict(type="Pretrained", checkpoint=HF.format(name))
    # 4-scale: stages 1..3 + 1 extra level; 5-scale: stages 0..3 + 1 extra (official `i >= 5 - scales`)
    assert tuple(bb.out_indices) == tuple(range(5 - levels, 4))
    assert cfg.model.neck.in_channels == channels[5 - levels:] and cfg.model.neck.num_outs == levels
    assert cfg.model.num_feature_levels == levels
    assert cfg.model.encoder.layer_cfg.self_attn_cfg.num_levels == levels
    assert cfg.model.decoder.layer_cfg.cross_attn_cfg.num_levels == levels
    opt = cfg.optim_wrapper
    assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay) == ("AdamW", 1e-4, 0.05)
    assert opt.clip_grad == dict(max_norm=0.1, norm_type=2) and opt.accumulative_counts == 2
    assert cfg.train_dataloader.batch_size == 1 and cfg.train_cfg.max_epochs == 12  # 8 GPUs x 1 x 2 steps
    assert [s.milestones for s in cfg.param_scheduler] == [[11]]
    assert (cfg.model.num_queries, cfg.model.dn_cfg.group_cfg.num_dn_queries) == (900, 100)
    if (size, levels) == ("t", 5):
        _check_dense_optimizer(cfg, _tiny_param_names(cfg))


@pytest.mark.parametrize("size", list(M2F))
def test_mask2former_recipe(size):
    path = _m2f_path(size)
    cfg = _load(path)
    assert M2F[size] in _text(path)
    name, _, channels = SIZES[size]
    bb = cfg.model.backbone
    assert bb.model_name == f"transnext_{name}" and bb.out_norms is False and bb.drop_path_rate == DENSE_DP[size]
    assert tuple(bb.out_indices) == (0, 1, 2, 3)
    assert bb.model_kwargs == dict(img_size=512, pretrain_size=224, pos_bias_mode="interpolate")
    head = cfg.model.decode_head
    assert (head.type, head.in_channels, head.num_classes, head.num_queries) == (
        "Mask2FormerHead", channels, 150, 100)
    opt = cfg.optim_wrapper
    assert (opt.optimizer.type, opt.optimizer.lr, opt.optimizer.weight_decay) == ("AdamW", 1e-4, 0.05)
    assert opt.clip_grad == dict(max_norm=0.01, norm_type=2)
    assert cfg.train_cfg.max_iters == 160000 and cfg.train_dataloader.batch_size == 2
    embed = dict(lr_mult=1.0, decay_mult=0.0)
    assert all(opt.paramwise_cfg.custom_keys[f"decode_head.{k}"] == embed
               for k in ("query_embed", "query_feat", "level_embed"))
    if size == "t":
        names = _tiny_param_names(cfg)
        _check_dense_optimizer(cfg, [n for n in names if n.startswith("backbone.")])


@pytest.mark.parametrize("size", list(DET))
def test_mask_rcnn_recipe(size):
    path = _det_path(size)
    cfg = _load(path)
    assert DET[size] in _text(path)
    _check_backbone(cfg, size, 800)
    assert cfg.model.neck.in_channels == SIZES[size][2] and cfg.model.neck.num_outs == 5
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, tuple(opt.betas), opt.weight_decay) == ("AdamW", 1e-4, (0.9, 0.999), 0.05)
    assert cfg.optim_wrapper.get("clip_grad") is None
    _check_no_decay(cfg)
    # official: fp16 with loss scale 512 for Base only
    amp = size == "b"
    assert (cfg.optim_wrapper.type == "AmpOptimWrapper") is amp
    assert cfg.optim_wrapper.get("loss_scale") == (512.0 if amp else None)
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor) == ("LinearLR", 500, 0.001)
    assert (steps.type, steps.milestones) == ("MultiStepLR", [8, 11])
    assert cfg.train_cfg.max_epochs == 12 and cfg.train_dataloader.batch_size == 2  # x 8 GPUs
    resize = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == "Resize"]
    assert resize and tuple(resize[0].scale) == (1333, 800)  # single scale, as official
    assert cfg.model.data_preprocessor.pad_size_divisor == 32


@pytest.mark.parametrize("size", list(SEG))
def test_upernet_recipe(size):
    path = _seg_path(size)
    cfg = _load(path)
    text = _text(path)
    assert all(number in text for number in SEG[size])
    _check_backbone(cfg, size, 512)
    channels = SIZES[size][2]
    head, aux = cfg.model.decode_head, cfg.model.auxiliary_head
    assert (head.type, head.channels, tuple(head.pool_scales), head.num_classes) == ("UPerHead", 512, (1, 2, 3, 6), 150)
    assert head.in_channels == channels and (aux.in_channels, aux.in_index) == (channels[2], 2)
    assert aux.loss_decode.loss_weight == 0.4
    opt = cfg.optim_wrapper.optimizer
    assert (opt.type, opt.lr, tuple(opt.betas), opt.weight_decay) == ("AdamW", 6e-5, (0.9, 0.999), 0.05)
    _check_no_decay(cfg)
    warmup, poly = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor) == ("LinearLR", 1500, 1e-6)
    assert (poly.type, poly.power, poly.eta_min, poly.end) == ("PolyLR", 1.0, 0.0, 160000)
    assert cfg.train_cfg.max_iters == 160000 and cfg.train_dataloader.batch_size == 2
    assert cfg.model.test_cfg == dict(mode="slide", crop_size=(512, 512), stride=(341, 341))


def test_no_decay_keys_hit_the_intended_parameters():
    """The official substring keys select exactly the query embeddings, local biases, CPB MLPs, temperatures and
    norms of our parameter names (and leave the learnable tokens and the linear layers decayed)."""
    import timm

    import backbones  # noqa: F401

    model = timm.create_model(
        "transnext_tiny", embed_dims=(24, 48, 72, 96), depths=(1, 1, 1, 1), num_heads=(1, 2, 3, 4)
    )
    names = [n for n, _ in model.named_parameters()]
    no_decay = {n for n in names if any(k in n for k in NO_DECAY)}
    decayed = {n for n in names if "learnable" in n or n.endswith((".q.weight", ".kv.weight", ".mlp.fc1.weight"))}
    assert decayed and decayed.isdisjoint(no_decay)
    assert {n for n in names if n.endswith(".attn.pool_norm.weight")} <= no_decay
    assert model.no_weight_decay() <= no_decay


def test_mask_rcnn_trains_and_evaluates_on_tiny_data(tiny_data, tmp_path):
    from backbones.mm import runner

    work = str(tmp_path / "mask-rcnn")
    run = runner.main(
        [
            str(_det_path("t")),
            "--tiny-data",
            tiny_data,
            "--work-dir",
            work,
            "--cfg-options",
            "train_dataloader.dataset.indices=4",
        ]
    )
    assert run.iter == 2
    assert type(run.model.backbone.model).__name__ == "TransNeXt"
    metrics = {
        k[len("val/") :]: v.current() for k, v in run.message_hub.log_scalars.items() if k.startswith("val/coco/")
    }
    for key in ("bbox_mAP", "segm_mAP"):
        assert 0.0 <= metrics[f"coco/{key}"] <= 1.0


def test_upernet_trains_and_evaluates_on_tiny_data(tiny_data, tmp_path):
    from backbones.mm import runner

    work = str(tmp_path / "upernet")
    cfg_options = ["train_cfg.max_iters=2", "train_cfg.val_interval=2", "default_hooks.checkpoint.interval=2"]
    run = runner.main(
        [str(_seg_path("t")), "--tiny-data", tiny_data, "--work-dir", work, "--cfg-options", *cfg_options]
    )
    assert run.iter == 2 and Path(work, "iter_2.pth").is_file()
    metrics = runner.test_main(
        [str(_seg_path("t")), f"{work}/iter_2.pth", "--tiny-data", tiny_data, "--work-dir", str(tmp_path / "test")]
    )
    assert set(metrics) >= {"mIoU", "aAcc", "mAcc"} and 0.0 <= metrics["mIoU"] <= 100.0
