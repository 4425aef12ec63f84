"""Turn a full mmdet / mmseg config into a smoke run on the data set of ``tools/make_tiny_data.py``.

:func:`tiny_config` edits an mmengine ``Config`` in place:

* data: ``<root>/coco`` (CocoDataset, classes "0".."9") or ``<root>/ade`` (ADE20K layout read by
  ``BaseSegDataset`` with 11 classes and ``reduce_zero_label=True``); small resize / crop (128) pipelines with
  the same transform types as the full configs; no workers;
* model: the same backbone family, narrowed (``embed_dim=16, depths=(1, 1, 1, 1)`` by default), no pretrained
  weights, neck / head input channels recomputed from the narrowed model, 64-channel neck and heads, the
  number of classes of the tiny set, test score threshold 0 (an untrained detector's scores are low; the
  metric then still sees detections); DINO and Mask2Former keep their structure with 2 encoder / decoder
  layers (Mask2Former: 64 wide, 1 pixel-decoder layer, 3 masked-attention layers) and fewer queries;
* schedule: ``epochs`` epochs (det) / ``iters`` iterations (seg), validation and a checkpoint at the end,
  logging every iteration. Optimizer and LR schedulers are the config's own, except that an
  iteration-based warm-up is cut to ``warmup_iters`` iterations (the full configs warm up for 500-1500
  iterations at ~1e-6 of the lr, longer than a whole smoke run, so its loss could not move).
"""

from __future__ import annotations

from typing import Any

__all__ = ["tiny_config", "DIGIT_CLASSES", "SEG_CLASSES"]

DIGIT_CLASSES = tuple(str(d) for d in range(10))
SEG_CLASSES = ("background",) + DIGIT_CLASSES
_SEG_PALETTE = [[120, 120, 120]] + [[(37 * i) % 256, (91 * i) % 256, (173 * i) % 256] for i in range(1, 11)]


def _backbone_channels(backbone: Any) -> list[int]:
    import timm

    import backbones  # noqa: F401

    kwargs = dict(backbone.get("model_kwargs") or {})
    model = timm.create_model(backbone["model_name"], pretrained=False, num_classes=0, **kwargs)
    n = len(model.feature_info)
    return [model.feature_info[i % n]["num_chs"] for i in backbone.get("out_indices", (0, 1, 2, 3))]


# Families whose constructors do not take ``embed_dim=<int>, depths=<tuple>``: model-name regex -> the
# narrowed constructor arguments (same class and structure, tiny widths and depths).
NARROW_KWARGS: dict[str, dict[str, Any]] = {
    r"efficientvit_m\d": dict(embed_dim=(16, 24, 32), depth=(1, 1, 1), num_heads=(2, 2, 2), key_dim=(4, 4, 4)),
    r"davit_.*": dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(1, 1, 1, 1)),
    r"biformer_.*": dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 1, 1), head_dim=8),
    r"transnext_.*": dict(embed_dims=(24, 48, 72, 96), num_heads=(1, 2, 3, 4), depths=(1, 1, 1, 1)),
    r"ravlt_.*": dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(1, 1, 1, 1)),
    r"agent_pvt_.*": dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(1, 1, 1, 1)),
    r"agent_swin_.*": dict(embed_dim=16, num_heads=(1, 2, 4, 8), depths=(1, 1, 1, 1), agent_depths=(1, 1, 1, 0)),
    r"halonet.*|sehalonet33ts|eca_halonext26ts": dict(
        stem_chs=16, widths=(64, 64, 128, 128), layouts=("B", "BA", "BA", "A"), num_heads=2
    ),
}


def _shrink_backbone(cfg: Any, width: int, depths: tuple[int, ...]) -> list[int]:
    import re

    bb = cfg.model.backbone
    if bb.get("type") != "TimmBackboneAdapter":
        raise ValueError(f"tiny_config: expects a TimmBackboneAdapter backbone, got {bb.get('type')!r}")
    kwargs = dict(bb.get("model_kwargs") or {})
    narrow = next((v for k, v in NARROW_KWARGS.items() if re.fullmatch(k, bb["model_name"])), None)
    kwargs.update(narrow if narrow is not None else dict(embed_dim=width, depths=depths))
    bb.model_kwargs = kwargs
    bb.init_cfg = None
    return _backbone_channels(bb)


def _narrow_transformer(layer_cfg: Any, c: int, ffn: int) -> None:
    """Set every attention / FFN embed dim of an mmdet transformer layer cfg to ``c`` (8 heads stay 8)."""
    for key in ("self_attn_cfg", "cross_attn_cfg"):
        if key in layer_cfg:
            layer_cfg[key].embed_dims = c
    layer_cfg.ffn_cfg.update(embed_dims=c, feedforward_channels=ffn)


def _dino(model: Any) -> None:
    """DINO with 2 + 2-layer transformers, 100 queries, 20 denoising queries. The width stays 256: mmdet's DINO
    decoder encodes the reference boxes with a fixed 128 features per coordinate."""
    for part in (model.encoder, model.decoder):
        part.num_layers = 2
        part.layer_cfg.ffn_cfg.feedforward_channels = 512
    model.num_queries = 100
    model.dn_cfg.group_cfg.num_dn_queries = 20
    model.bbox_head.num_classes = len(DIGIT_CLASSES)
    model.test_cfg.max_per_img = 100


def _mask2former(head: Any, channels: list[int], num_classes: int, c: int = 64) -> None:
    """Mask2Former with 64-wide pixel / transformer decoders of 1 / 3 layers and 20 queries."""
    head.update(in_channels=channels, feat_channels=c, out_channels=c, num_queries=20, num_classes=num_classes)
    head.pixel_decoder.encoder.num_layers = 1
    _narrow_transformer(head.pixel_decoder.encoder.layer_cfg, c, 2 * c)
    head.pixel_decoder.positional_encoding.num_feats = c // 2
    head.positional_encoding.num_feats = c // 2
    head.transformer_decoder.num_layers = 3
    _narrow_transformer(head.transformer_decoder.layer_cfg, c, 2 * c)
    head.loss_cls.class_weight = [1.0] * num_classes + [0.1]
    head.train_cfg.num_points = 2048


def _det(cfg: Any, root: str, width: int, depths: tuple[int, ...], epochs: int, train_images: int | None) -> None:
    channels = _shrink_backbone(cfg, width, depths)
    model = cfg.model
    c = 64
    if model.type == "DINO":
        model.neck.update(in_channels=channels)
        _dino(model)
    else:
        model.neck.update(in_channels=channels, out_channels=c)
    with_mask = "roi_head" in model and model.roi_head.get("mask_head") is not None
    if "rpn_head" in model:
        model.rpn_head.update(in_channels=c, feat_channels=c)
    if "roi_head" in model:
        rh = model.roi_head
        rh.bbox_roi_extractor.out_channels = c
        for head in rh.bbox_head if isinstance(rh.bbox_head, list) else [rh.bbox_head]:  # Cascade: one per stage
            head.update(in_channels=c, fc_out_channels=128, num_classes=len(DIGIT_CLASSES))
            if "conv_out_channels" in head:  # ConvFCBBoxHead (the Swin 4conv1fc cascade heads)
                head.conv_out_channels = c
        if with_mask:
            rh.mask_roi_extractor.out_channels = c
            rh.mask_head.update(in_channels=c, conv_out_channels=c, num_classes=len(DIGIT_CLASSES))
        rcnn = model.train_cfg.rcnn
        for stage in rcnn if isinstance(rcnn, list) else [rcnn]:
            stage.sampler.num = 128
        model.test_cfg.rpn.max_per_img = 100
        model.test_cfg.rcnn.score_thr = 0.0
    if "bbox_head" in model and model.type != "DINO":
        model.bbox_head.update(in_channels=c, feat_channels=c, num_classes=len(DIGIT_CLASSES))
        model.test_cfg.score_thr = 0.0

    scale = (160, 128)
    load_ann = dict(type="LoadAnnotations", with_bbox=True, with_mask=with_mask)
    train_pipeline = [
        dict(type="LoadImageFromFile"), load_ann,
        dict(type="RandomChoiceResize", scales=[(160, 112), (160, 128), (176, 144)], keep_ratio=True),
        dict(type="RandomFlip", prob=0.5), dict(type="PackDetInputs"),
    ]
    test_pipeline = [
        dict(type="LoadImageFromFile"), dict(type="Resize", scale=scale, keep_ratio=True), load_ann,
        dict(type="PackDetInputs", meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor")),
    ]
    data_root = f"{root}/coco/"

    def dataset(split: str, pipeline: list, **extra: Any) -> dict:
        return dict(type="CocoDataset", data_root=data_root, ann_file=f"annotations/instances_{split}.json",
                    data_prefix=dict(img=f"{split}/"), metainfo=dict(classes=DIGIT_CLASSES), pipeline=pipeline,
                    **extra)

    train_ds = dataset("train", train_pipeline, filter_cfg=dict(filter_empty_gt=True, min_size=32))
    if train_images is not None:
        train_ds["indices"] = train_images
    cfg.train_dataloader = dict(
        batch_size=2, num_workers=0, persistent_workers=False, sampler=dict(type="DefaultSampler", shuffle=True),
        batch_sampler=dict(type="AspectRatioBatchSampler"), dataset=train_ds)
    val_loader = dict(batch_size=2, num_workers=0, persistent_workers=False, drop_last=False,
                      sampler=dict(type="DefaultSampler", shuffle=False),
                      dataset=dataset("val", test_pipeline, test_mode=True))
    cfg.val_dataloader = val_loader
    cfg.test_dataloader = val_loader
    metric = ["bbox", "segm"] if with_mask else ["bbox"]
    evaluator = dict(type="CocoMetric", ann_file=f"{data_root}annotations/instances_val.json", metric=metric,
                     format_only=False)
    cfg.val_evaluator = evaluator
    cfg.test_evaluator = evaluator
    cfg.train_cfg = dict(type="EpochBasedTrainLoop", max_epochs=epochs, val_interval=epochs)
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = epochs


def _seg(cfg: Any, root: str, width: int, depths: tuple[int, ...], iters: int) -> None:
    channels = _shrink_backbone(cfg, width, depths)
    model = cfg.model
    if model.decode_head.type == "Mask2FormerHead":  # reads every backbone map, no in_index
        _mask2former(model.decode_head, channels, len(SEG_CLASSES))
    elif model.get("neck"):  # e.g. Semantic FPN: the heads read the neck's maps
        model.neck.update(in_channels=channels, out_channels=64)
        head_in = [64] * len(model.decode_head.in_index)
    else:
        head_in = [channels[i] for i in model.decode_head.in_index]
    if model.decode_head.type != "Mask2FormerHead":
        model.decode_head.update(in_channels=head_in, channels=64, num_classes=len(SEG_CLASSES))
    aux = model.get("auxiliary_head")
    for head in aux if isinstance(aux, list) else [aux] if aux else []:
        head.update(in_channels=channels[head.in_index], channels=32, num_classes=len(SEG_CLASSES))
    crop = (128, 128)
    model.data_preprocessor.size = crop
    if "data_preprocessor" in cfg:
        cfg.data_preprocessor.size = crop

    train_pipeline = [
        dict(type="LoadImageFromFile"), dict(type="LoadAnnotations", reduce_zero_label=True),
        dict(type="RandomResize", scale=(512, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type="RandomCrop", crop_size=crop, cat_max_ratio=0.75), dict(type="RandomFlip", prob=0.5),
        dict(type="PhotoMetricDistortion"), dict(type="PackSegInputs"),
    ]
    # Resize to a height of 128 keeps the width odd-sized (152 * 128 / 120 = 162): the backbone pads internally.
    test_pipeline = [
        dict(type="LoadImageFromFile"), dict(type="Resize", scale=(512, 128), keep_ratio=True),
        dict(type="LoadAnnotations", reduce_zero_label=True), dict(type="PackSegInputs"),
    ]

    def dataset(split: str, pipeline: list) -> dict:
        return dict(type="BaseSegDataset", data_root=f"{root}/ade",
                    data_prefix=dict(img_path=f"images/{split}", seg_map_path=f"annotations/{split}"),
                    img_suffix=".jpg", seg_map_suffix=".png", reduce_zero_label=True,
                    metainfo=dict(classes=SEG_CLASSES, palette=_SEG_PALETTE), pipeline=pipeline)

    cfg.train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                                sampler=dict(type="InfiniteSampler", shuffle=True),
                                dataset=dataset("training", train_pipeline))
    val_loader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      sampler=dict(type="DefaultSampler", shuffle=False),
                      dataset=dataset("validation", test_pipeline))
    cfg.val_dataloader = val_loader
    cfg.test_dataloader = val_loader
    cfg.val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=iters)
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.update(by_epoch=False, interval=iters)


def tiny_config(
    cfg: Any,
    data_root: str = "data/tiny",
    *,
    width: int = 16,
    depths: tuple[int, ...] = (1, 1, 1, 1),
    epochs: int = 1,
    iters: int = 8,
    train_images: int | None = None,
    warmup_iters: int = 2,
) -> Any:
    """Edit ``cfg`` (mmengine Config of a configs/det or configs/seg file) for a smoke run; return it.

    Args:
        data_root: output directory of ``tools/make_tiny_data.py``.
        width / depths: ``embed_dim`` and ``depths`` of the narrowed backbone (same family and class).
        epochs: training epochs of detection configs (24 images, batch 2: 12 iterations per epoch).
        iters: training iterations of segmentation configs.
        train_images: use only the first N training images (detection; fewer iterations).
        warmup_iters: length of the config's iteration-based warm-up in the smoke run.
    """
    root = str(data_root).rstrip("/")
    scope = cfg.get("default_scope")
    if scope == "mmdet":
        _det(cfg, root, width, tuple(depths), epochs, train_images)
    elif scope == "mmseg":
        _seg(cfg, root, width, tuple(depths), iters)
    else:
        raise ValueError(f"tiny_config: expects an mmdet or mmseg config (default_scope), got {scope!r}")
    _shorten_warmup(cfg, warmup_iters)
    cfg.env_cfg.cudnn_benchmark = False
    return cfg


def _shorten_warmup(cfg: Any, warmup_iters: int) -> None:
    """End every iteration-based scheduler's warm-up after ``warmup_iters``; shift what started at its end."""
    schedulers = cfg.get("param_scheduler")
    if not schedulers:
        return
    schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
    old_ends = set()
    for sched in schedulers:
        if sched.get("type") == "LinearLR" and not sched.get("by_epoch", True) and sched.get("end", 0) > warmup_iters:
            old_ends.add(sched["end"])
            sched["end"] = warmup_iters
    for sched in schedulers:
        if not sched.get("by_epoch", True) and sched.get("begin") in old_ends:
            sched["begin"] = warmup_iters
