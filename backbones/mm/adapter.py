"""``TimmBackboneAdapter``: any model of this repository as an mmdet / mmseg backbone.

The adapter builds the full timm-style model (``timm.create_model(model_name, **model_kwargs)``, so parameter
names stay those of the classification model and its ``group_matcher`` / ``checkpoint_filter_fn`` keep working),
prunes what dense prediction does not use (classifier, final norm, stages after the last requested one) and
returns ``forward_intermediates`` as a tuple of NCHW maps.

It speaks mmpretrain's vocabulary: ``out_indices``, ``frozen_stages``, ``norm_eval``, ``with_cp``, per-output
norms ``norm{i}`` (as the official FocalNet / Swin detection backbones add them) and
``init_cfg=dict(type='Pretrained', checkpoint=...)`` for official, timm or this repository's checkpoints.

Stages are the entries of the model's ``feature_info`` (for FocalNet: index i = ``layers.i``, stride 4 * 2**i).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["TimmBackboneAdapter", "read_checkpoint"]

_OUT_NORM_PREFIX = "norm"


def _log(msg: str, level: int = logging.INFO) -> None:
    print_log(msg, logger="current", level=level)


def _build_out_norm(out_norms: bool | Mapping, channels: int) -> nn.Module:
    """LayerNorm2d (eps 1e-5, as the official detection backbones' nn.LayerNorm) or any mmcv norm cfg."""
    from timm.layers import LayerNorm2d

    if out_norms is True:
        return LayerNorm2d(channels, eps=1e-5)
    cfg = dict(out_norms)
    if cfg.get("type") in ("LN", "LN2d", "LayerNorm", "LayerNorm2d"):
        return LayerNorm2d(channels, eps=cfg.get("eps", 1e-5))
    from mmcv.cnn import build_norm_layer

    return build_norm_layer(cfg, channels)[1]


def read_checkpoint(checkpoint: str | Mapping) -> Mapping:
    """Load a checkpoint object from a path, ``local-dir:<folder>`` (or a folder), URL, ``open-mmlab://``...,
    ``hf-hub:<repo>`` or ``timm:<model.tag>``.

    A local file that is empty or cut short raises ``IncompleteCheckpointError`` naming it; a download that fails
    raises ``WeightsUnavailableError`` naming the location and how to use a local copy instead.
    """
    from backbones._weights import WeightsUnavailableError, _network_errors, load_checkpoint_file

    if not isinstance(checkpoint, str):
        return checkpoint
    if "://" not in checkpoint and not checkpoint.startswith(("hf-hub:", "timm:")):
        return load_checkpoint_file(checkpoint)  # local file or folder
    try:
        if checkpoint.startswith(("hf-hub:", "timm:")):
            from timm.models._hub import load_state_dict_from_hf

            repo = checkpoint.split(":", 1)[1]
            if checkpoint.startswith("timm:"):
                repo = f"timm/{repo}"
            return load_state_dict_from_hf(repo)
        from mmengine.runner.checkpoint import CheckpointLoader

        # http(s)://, open-mmlab://, torchvision://, s3:// ... (mmengine >= 0.11 loads weights_only=False).
        return CheckpointLoader.load_checkpoint(checkpoint, map_location="cpu", logger="current")
    except _network_errors() as e:
        raise WeightsUnavailableError(
            f"init_cfg checkpoint {checkpoint!r} could not be downloaded ({type(e).__name__}: {e}). Download it "
            "where there is a network and point init_cfg at the local copy: dict(type='Pretrained', "
            "checkpoint='/path/to/file.pth'), or at a folder written by tools/convert_weights.py: "
            "checkpoint='local-dir:/path/to/folder'"
        ) from e


_STEM_NAMES = ("stem", "patch_embed")


class TimmBackboneAdapter(BaseModule):
    """A timm-style model of this repository as a dense-prediction backbone.

    Args:
        model_name: a model name of this repository (or any timm name), e.g. ``'focalnet_tiny_srf'``.
        out_indices: stages to return (indices into the model's ``feature_info``; negative counts from the end).
        frozen_stages: -1 freezes nothing; 0 freezes the stem; k >= 1 freezes the stem and stages 0..k-1
            (mmdet ResNet / Swin convention; stages are the model's ``stages`` / ``layers`` children, whatever
            ``feature_info`` taps). Frozen parts stay in eval mode and get ``requires_grad=False``.
        norm_eval: keep every BatchNorm of the backbone in eval mode while training (frozen running stats).
        with_cp: gradient checkpointing (``model.set_grad_checkpointing()``): less memory, same gradients.
        out_norms: False, True (LayerNorm2d over each output's channels, eps 1e-5) or an mmcv norm cfg
            (``dict(type='LN')`` is also LayerNorm2d; ``BN``/``SyncBN``/``GN`` act on NCHW directly), or a
            sequence of those, one per output (e.g. ``(False, True, True, True)``: the official LITv2 detection
            backbone). Named ``norm{i}`` for stage i, as in the official FocalNet / Swin detection backbones.
        drop_path_rate: stochastic depth of the model (None keeps the model's default).
        in_channels: input channels (timm ``in_chans``).
        model_kwargs: any further keyword arguments of the model, e.g. ``dict(focal_windows=9)``.
        init_cfg: ``dict(type='Pretrained', checkpoint=..., prefix=None)``; ``checkpoint`` is a path, an URL,
            ``hf-hub:<repo>`` or ``timm:<model.tag>``. Official, timm and this repository's layouts load through
            the family's ``checkpoint_filter_fn``; classifier / final-norm keys are dropped and logged.
    """

    def __init__(
        self,
        model_name: str,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        norm_eval: bool = False,
        with_cp: bool = False,
        out_norms: bool | Mapping | Sequence[bool | Mapping] = False,
        drop_path_rate: float | None = None,
        in_channels: int = 3,
        model_kwargs: Mapping[str, Any] | None = None,
        init_cfg: Mapping | Sequence[Mapping] | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        import timm

        import backbones  # noqa: F401  (registers this repository's models with timm)

        kwargs = dict(model_kwargs or {})
        for key in ("features_only", "out_indices", "pretrained"):
            if key in kwargs:
                raise ValueError(
                    f"TimmBackboneAdapter: pass {key!r} as an adapter argument / init_cfg, not in model_kwargs"
                )
        if drop_path_rate is not None:
            kwargs["drop_path_rate"] = drop_path_rate
        self.model_name = model_name
        self.model = timm.create_model(model_name, pretrained=False, in_chans=in_channels, **kwargs)
        if not hasattr(self.model, "forward_intermediates"):
            raise TypeError(f"TimmBackboneAdapter: {model_name} has no forward_intermediates(); cannot tap stages")

        info = list(self.model.feature_info)
        n = len(info)
        if any(not -n <= i < n for i in out_indices):
            raise ValueError(f"TimmBackboneAdapter({model_name}): out_indices {tuple(out_indices)} out of range "
                             f"for a model with {n} feature stages")
        self.out_indices = tuple(i % n for i in out_indices)
        if list(self.out_indices) != sorted(set(self.out_indices)):
            raise ValueError(f"TimmBackboneAdapter({model_name}): out_indices must be increasing, got {out_indices}")
        self.channels = [info[i]["num_chs"] for i in self.out_indices]
        self.strides = [info[i]["reduction"] for i in self.out_indices]
        self._stage_modules = [info[i]["module"] for i in range(n)]

        # Drop what dense prediction never uses (unused parameters would also break DDP).
        if hasattr(self.model, "prune_intermediate_layers"):
            self.model.prune_intermediate_layers(list(self.out_indices), prune_norm=True, prune_head=True)
        elif hasattr(self.model, "reset_classifier"):
            self.model.reset_classifier(0, "")

        if isinstance(out_norms, Sequence) and not isinstance(out_norms, str):  # one entry per output
            per_output = list(out_norms)
            if len(per_output) != len(self.out_indices):
                raise ValueError(
                    f"TimmBackboneAdapter({model_name}): out_norms has {len(per_output)} entries for "
                    f"{len(self.out_indices)} out_indices {self.out_indices}; give one per output or a single value"
                )
        else:
            per_output = [out_norms] * len(self.out_indices)
        self.out_norms = out_norms
        for i, ch, norm in zip(self.out_indices, self.channels, per_output):
            if norm:
                self.add_module(f"{_OUT_NORM_PREFIX}{i}", _build_out_norm(norm, ch))

        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        if with_cp:
            self.model.set_grad_checkpointing(True)
        self._freeze_stages()
        _log(
            f"TimmBackboneAdapter: {model_name} out_indices={self.out_indices} channels={self.channels} "
            f"strides={self.strides} frozen_stages={frozen_stages} norm_eval={norm_eval} with_cp={with_cp} "
            f"out_norms={[i for i in self.out_indices if hasattr(self, f'{_OUT_NORM_PREFIX}{i}')]}"
        )

    # ----------------------------------------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        feats = self.model.forward_intermediates(
            x, indices=list(self.out_indices), norm=False, output_fmt="NCHW", intermediates_only=True
        )
        return tuple(
            getattr(self, f"{_OUT_NORM_PREFIX}{i}")(f) if hasattr(self, f"{_OUT_NORM_PREFIX}{i}") else f
            for i, f in zip(self.out_indices, feats)
        )

    # ------------------------------------------------------------------------------------ freezing / train()
    def _freeze_plan(self) -> tuple[list[str], list[str]]:
        """(stem children, stage module names) for ``frozen_stages``.

        Stages are the children of the container holding the first feature past the stem (``stages`` / ``layers``),
        so a feature tapped inside the stem (HaloNet's ``stem.conv3``) or after it (``final_conv``) does not shift
        the count: ``frozen_stages=1`` freezes the stem and the first stage, as mmdet's ResNet does.
        """
        names = [m for m in self._stage_modules if m.split(".")[0] not in _STEM_NAMES] or self._stage_modules
        top, _, rest = names[0].partition(".")
        container = getattr(self.model, top, None)
        if rest.isdigit() and isinstance(container, nn.Sequential | nn.ModuleList):
            names = [f"{top}.{i}" for i in range(len(container))]
        stem = []
        for name, _child in self.model.named_children():
            if name == top:
                break
            stem.append(name)
        return stem, names

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        stem, stages = self._freeze_plan()
        frozen = stem + stages[: self.frozen_stages]
        mods = [getattr(self.model, name) for name in stem]
        for name in stages[: self.frozen_stages]:
            try:
                mods.append(self.model.get_submodule(name))
            except AttributeError:  # stage pruned away (after the last out index): nothing to freeze
                continue
        for j, feature in enumerate(self._stage_modules):  # output norms of features inside frozen parts
            inside = any(feature == f or feature.startswith(f + ".") for f in frozen)
            if inside and hasattr(self, f"{_OUT_NORM_PREFIX}{j}"):
                mods.append(getattr(self, f"{_OUT_NORM_PREFIX}{j}"))
        return mods

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> TimmBackboneAdapter:
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    # ------------------------------------------------------------------------------------------ init weights
    def init_weights(self) -> None:
        """Apply ``init_cfg``; never let mmengine re-initialise the timm model (it is initialised on creation)."""
        cfgs = self.init_cfg or []
        cfgs = [cfgs] if isinstance(cfgs, Mapping) else list(cfgs)
        others = [c for c in cfgs if c.get("type") != "Pretrained"]
        if others:
            from mmengine.model import initialize

            initialize(self, others)
        for cfg in cfgs:
            if cfg.get("type") == "Pretrained":
                self.load_pretrained(cfg["checkpoint"], prefix=cfg.get("prefix"))
        self._is_init = True

    def convert_state_dict(self, state_dict: Mapping, source: str = "<state dict>") -> tuple[dict, list[str]]:
        """Map a backbone state dict (official, timm or this repository's layout) onto this adapter's keys.

        Returns ``(converted, unexpected)``: ``converted`` is keyed like ``self.state_dict()`` (``model.*`` for the
        timm model through the family's ``checkpoint_filter_fn``, ``norm{i}.*`` for the per-output norms of an
        official detection backbone), ``unexpected`` lists the checkpoint keys the backbone does not use (e.g. a
        classifier). Raises ValueError when the checkpoint cannot be of this model (filter failure, fewer than half
        of the model's tensors matched) or a tensor has another shape.
        """
        from backbones.models._common import unwrap_state_dict

        sd = dict(state_dict)
        own = self.state_dict()
        if sd and all(k in own for k in sd):  # already this adapter's layout (e.g. a detector saved here)
            return sd, []
        # Per-output norms (this adapter's and the official detection backbones' `norm{i}`) load into the
        # adapter; everything else goes through the family's filter into the timm model.
        own_norms = {k for k in own if not k.startswith("model.")}
        inner_keys = set(self.model.state_dict())
        norm_sd = {k: v for k, v in sd.items() if k in own_norms and k not in inner_keys}
        rest = {k: v for k, v in sd.items() if k not in norm_sd}
        if rest and all(k.startswith("model.") for k in rest):
            rest = {k[len("model."):]: v for k, v in rest.items()}
        rest = unwrap_state_dict(rest) if rest else {}

        # Classifier keys (timm's `head.fc.*`, the official `head.*`) are dropped here so that they are reported.
        classifier = (getattr(self.model, "pretrained_cfg", None) or {}).get("classifier") or "head"
        heads = tuple({f"{classifier}.", f"{classifier.split('.')[0]}."})
        dropped = []
        if not any(k.startswith(heads) for k in inner_keys):
            dropped = sorted(k for k in rest if k.startswith(heads))
            rest = {k: v for k, v in rest.items() if not k.startswith(heads)}

        filter_fn = getattr(sys.modules[type(self.model).__module__], "checkpoint_filter_fn", None)
        if filter_fn is not None and rest:
            try:
                rest = filter_fn(rest, self.model)
            except Exception as e:  # a wrong-family checkpoint can trip the filter itself
                raise ValueError(
                    f"TimmBackboneAdapter({self.model_name}): the checkpoint filter of "
                    f"{type(self.model).__module__} failed on {source} ({type(e).__name__}: {e}); "
                    "is it a checkpoint of another model family?"
                ) from e
        unexpected = sorted(dropped + [k for k in rest if k not in inner_keys])
        # Official detection backbones (DaViT's, for one) build an output norm for every stage, also for a stage the
        # neck does not read (RetinaNet: FPN start_level=1); such a norm{i} is no part of this network: dropped.
        unused_norms = [k for k in unexpected if (m := re.match(rf"{_OUT_NORM_PREFIX}(\d+)\.(weight|bias)$", k))
                        and int(m[1]) not in self.out_indices]
        if unused_norms:
            _log(f"TimmBackboneAdapter({self.model_name}): dropped the output norms of stages it does not return: "
                 f"{_brief(unused_norms)}")
            unexpected = [k for k in unexpected if k not in unused_norms]
        matched = [k for k in rest if k in inner_keys]
        if len(matched) < 0.5 * len(inner_keys):
            raise ValueError(
                f"TimmBackboneAdapter({self.model_name}): checkpoint {source} does not fit "
                f"{type(self.model).__name__}: only {len(matched)} of its {len(inner_keys)} tensors match "
                f"(checkpoint keys e.g. {sorted(rest)[:4]}, model keys e.g. {sorted(inner_keys)[:4]}). "
                "Is it a checkpoint of another model family or size?"
            )
        converted = {f"model.{k}": rest[k] for k in matched}
        converted.update(norm_sd)
        bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
               for k, v in converted.items() if own[k].shape != v.shape]
        if bad:
            raise ValueError(f"TimmBackboneAdapter({self.model_name}): checkpoint {source} does not fit: "
                             f"{len(bad)} shape mismatches, e.g. {'; '.join(bad[:3])}")
        return converted, unexpected

    def load_pretrained(self, checkpoint: str | Mapping, prefix: str | None = None) -> dict[str, list[str]]:
        """Load official, timm or this repository's weights (classifier keys dropped, the rest checked).

        ``prefix`` (e.g. ``'backbone.'``) selects the keys of a full detector / segmentor checkpoint; without
        it, a checkpoint whose keys are partly ``backbone.*`` is reduced to those keys. Returns the dropped
        (``unexpected``) and not-loaded (``missing``) key lists, which are also logged.
        """
        from backbones.models._common import unwrap_state_dict

        source = checkpoint if isinstance(checkpoint, str) else "<state dict>"
        sd = unwrap_state_dict(read_checkpoint(checkpoint))
        if prefix is None and any(k.startswith("backbone.") for k in sd):
            prefix = "backbone."
        if prefix:
            prefix = prefix if prefix.endswith(".") else prefix + "."
            sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            if not sd:
                raise ValueError(f"TimmBackboneAdapter: no key of {source} starts with prefix {prefix!r}")

        converted, unexpected = self.convert_state_dict(sd, source)
        self.load_state_dict(converted, strict=False)
        missing = sorted(k for k in self.state_dict() if k not in converted)
        norms = sorted({k.split(".")[0] for k in converted if not k.startswith("model.")})
        _log(
            f"TimmBackboneAdapter({self.model_name}): loaded {len(converted)} tensors from {source}"
            + (f"; per-output norms {norms}" if norms else "")
        )
        if unexpected:
            _log(f"  dropped {len(unexpected)} checkpoint keys the backbone does not use: {_brief(unexpected)}")
        if missing:
            level = logging.INFO if all(k.startswith(_OUT_NORM_PREFIX) for k in missing) else logging.WARNING
            _log(f"  {len(missing)} backbone keys not in the checkpoint (left as initialised): {_brief(missing)}",
                 level)
        return dict(missing=[k[len("model."):] if k.startswith("model.") else k for k in missing],
                    unexpected=unexpected)


def _brief(keys: list[str], limit: int = 8) -> str:
    return ", ".join(keys[:limit]) + (f", ... (+{len(keys) - limit})" if len(keys) > limit else "")
