"""Helpers shared by every model family: input validation, checkpoint unwrapping, stage-wise feature taps."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from timm.layers import register_notrace_function, trunc_normal_
from timm.models._features import feature_take_indices
from torch import Tensor, nn

__all__ = [
    "init_linear_trunc_normal",
    "ClassifierHeadMixin",
    "StagedModelMixin",
    "check_input",
    "drop_absent_classifier",
    "load_checkpoint",
    "load_state_dict_checked",
    "per_stage",
    "rename_key",
    "stage_group_matcher",
    "unwrap_state_dict",
]


@register_notrace_function  # reason: shape comparisons are control flow on Proxies
def check_input(x: Tensor, in_chans: int, min_size: int, model: str) -> Tensor:
    """``x`` itself; a clear error for input a model cannot take.

    Returns its input so that callers write ``x = check_input(x, ...)``: the check then stays on the data path of
    FX graphs (a leaf call, as timm's ``register_notrace_function``), TorchScript and torch.export programs.

    Args:
        x: the image batch, expected (B, in_chans, H, W).
        in_chans: channels the model was built for.
        min_size: smallest H and W the network accepts (usually its total stride).
        model: the model's class or architecture name, used in the message.
    """
    if torch.jit.is_scripting():  # the same checks; TorchScript cannot format a tuple of the shape
        if x.dim() != 4 or x.shape[1] != in_chans or x.shape[2] < min_size or x.shape[3] < min_size:
            raise ValueError(
                model + ": expected input x of shape (B, " + str(in_chans) + ", H, W) with H, W >= "
                + str(min_size) + ", got " + str(x.shape)
            )
    else:
        if x.ndim != 4:
            raise ValueError(f"{model}: expected input x of shape (B, {in_chans}, H, W), got {tuple(x.shape)}")
        if x.shape[1] != in_chans:
            raise ValueError(
                f"{model}: expected input x with {in_chans} channels, i.e. shape (B, {in_chans}, H, W), "
                f"got {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if h < min_size or w < min_size:
            raise ValueError(
                f"{model}: input of {h}x{w} is too small; H and W must be at least {min_size} "
                f"(the network's total stride), got x of shape {tuple(x.shape)}"
            )
    return x


def per_stage(value: Any, num_stages: int, name: str, model: str) -> tuple:
    """One value per stage: a single value (not a sequence) is repeated, a sequence must have ``num_stages`` items."""
    if not isinstance(value, Sequence) or isinstance(value, str):
        return (value,) * num_stages
    values = tuple(value)
    if len(values) != num_stages:
        raise ValueError(f"{model}: {name} needs one value per stage ({num_stages}), got {values!r}")
    return values


def stage_group_matcher(coarse: bool, final: str = "norm") -> dict[str, Any]:
    """timm's ``group_matcher`` for ``stem`` -> ``stages.N`` (``downsample`` then ``blocks.M``) -> ``final``.

    ``final`` is the module after the last stage (``norm``, ``norm_pre``, ``conv_head``), grouped last.
    """
    last = (rf"^{final}", (99999,))
    if coarse:
        return dict(stem=r"^stem", blocks=[(r"^stages\.(\d+)", None), last])
    blocks = [(r"^stages\.(\d+)\.downsample", (0,)), (r"^stages\.(\d+)\.blocks\.(\d+)", None), last]
    return dict(stem=r"^stem", blocks=blocks)


def init_linear_trunc_normal(module: nn.Module) -> None:
    """``model.apply`` initialiser of the official codes of several families: every Linear weight trunc-normal(0.02)
    with a zero bias; convolutions and norms keep PyTorch's defaults."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def rename_key(key: str, rules: Sequence[tuple[str, str]]) -> str:
    """``key`` after every (regex, replacement) of ``rules`` in turn: an official-layout key in ours."""
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


def drop_absent_classifier(state_dict: Mapping[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """The checkpoint without its ``head.fc.*`` keys when ``model`` has no classifier (num_classes=0)."""
    if any(k.startswith("head.fc.") for k in model.state_dict()):
        return dict(state_dict)
    return {k: v for k, v in state_dict.items() if not k.startswith("head.fc.")}


_WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model", "module", "teacher")
_PREFIXES = ("module.", "backbone.", "model.", "encoder.")


def unwrap_state_dict(
    checkpoint: Any, prefixes: tuple[str, ...] = _PREFIXES, use_ema: bool = False
) -> dict[str, Tensor]:
    """Return the tensor dict inside a checkpoint.

    Accepts a plain state dict or one wrapped under ``state_dict`` / ``model`` / ... (as saved by timm,
    mmengine, the official repos and DDP), and strips ``module.`` / ``backbone.`` prefixes that every key shares.
    """
    sd = checkpoint
    while isinstance(sd, Mapping) and not any(isinstance(v, Tensor) for v in sd.values()):
        key = next((k for k in _WRAPPER_KEYS if k in sd), None)
        if key is None:
            raise ValueError(
                f"checkpoint has no tensors at the top level and none of the wrapper keys {_WRAPPER_KEYS}; "
                f"found keys {sorted(sd)[:10]}"
            )
        sd = sd[key]
    if not isinstance(sd, Mapping):
        raise TypeError(f"expected a state dict (a mapping of names to tensors), got {type(sd).__name__}")
    sd = {k: v for k, v in sd.items() if isinstance(v, Tensor)}
    changed = True
    while changed and sd:
        changed = False
        for p in prefixes:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


def load_state_dict_checked(model: torch.nn.Module, state_dict: Mapping[str, Tensor], strict: bool = True) -> Any:
    """``load_state_dict`` with a message that names the family and the expected shapes on mismatch."""
    own = model.state_dict()
    bad_shapes = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and own[k].shape != v.shape
    ]
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    name = type(model).__name__
    if bad_shapes or (strict and (missing or unexpected)):
        lines = [f"checkpoint does not fit {name}:"]
        if bad_shapes:
            lines.append(f"  {len(bad_shapes)} shape mismatches, e.g. " + "; ".join(bad_shapes[:3]))
        if strict and missing:
            lines.append(f"  {len(missing)} missing keys, e.g. {missing[:5]}")
        if strict and unexpected:
            lines.append(f"  {len(unexpected)} unexpected keys, e.g. {unexpected[:5]}")
        if len(missing) > 0.5 * len(own):
            lines.append(f"  (most keys differ: is this a checkpoint of another family or model size than {name}?)")
        raise ValueError("\n".join(lines))
    return model.load_state_dict(state_dict, strict=strict)


def load_checkpoint(
    model: torch.nn.Module, checkpoint: Any, strict: bool = True, filter_fn: Any = None, use_ema: bool = False
) -> Any:
    """Load official, timm or this repository's weights into ``model``.

    ``checkpoint`` is a path (``.pth``/``.pt``/``.bin``/``.safetensors``, a folder written by
    ``tools/convert_weights.py`` or ``local-dir:DIR``) or an already loaded object; an empty or cut-short file
    raises ``IncompleteCheckpointError`` naming it. Wrappers and prefixes are removed (:func:`unwrap_state_dict`;
    ``use_ema`` picks EMA weights when both are saved), then the family's ``checkpoint_filter_fn`` maps official
    layouts onto ours (it passes our own layout through), then the keys and shapes are checked.
    """
    import os
    import sys

    from backbones._weights import load_checkpoint_file

    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = load_checkpoint_file(checkpoint)
    sd = unwrap_state_dict(checkpoint, use_ema=use_ema)
    if filter_fn is None:
        filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        sd = filter_fn(sd, model)
    return load_state_dict_checked(model, sd, strict=strict)


class ClassifierHeadMixin:
    """``no_weight_decay`` (empty), ``get_classifier`` and ``reset_classifier`` of a model whose ``self.head`` is a
    timm ``ClassifierHead`` / ``NormMlpClassifierHead`` fed ``self.num_features`` channels."""

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None, reset_other: bool = False) -> None:
        param = next(self.parameters())
        self.num_classes = num_classes
        self.head.reset(
            num_classes,
            pool_type=global_pool,
            reset_other=reset_other,  # NormMlpClassifierHead: drop its norm / pre-logits too; a no-op otherwise
            in_features=self.num_features,
            device=param.device,
            dtype=param.dtype,
        )
        self.head_hidden_size = self.head.num_features


class StagedModelMixin(ClassifierHeadMixin):
    """The timm model API shared by every family built as stem -> stages -> final norm -> classifier head.

    On top of :class:`ClassifierHeadMixin`: ``forward_intermediates`` / ``prune_intermediate_layers`` and
    ``set_grad_checkpointing``. The model names its parts through class attributes: ``_family`` (for messages),
    ``_stages_attr`` (the ``nn.Sequential`` of stages, each with its own ``set_grad_checkpointing``), ``_stem_attr``
    (None: the first stage takes the image), ``_norm_attr`` (the final norm, None if there is none) and
    ``_nhwc_stages`` (stages pass channels-last maps; 'NHWC' output is then offered too). A model that runs a stage
    differently (e.g. checkpointed) overrides :meth:`_run_stage`.
    """

    _family = "model"
    _stages_attr = "stages"
    _stem_attr: str | None = "stem"
    _norm_attr: str | None = "norm"
    _nhwc_stages = False

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in getattr(self, self._stages_attr):
            stage.set_grad_checkpointing(enable)

    def _run_stage(self, stage: nn.Module, x: Tensor) -> Tensor:
        return stage(x)

    def _final_norm(self, x: Tensor) -> Tensor:
        return x if self._norm_attr is None else getattr(self, self._norm_attr)(x)

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Stage outputs (not normalised, unless ``norm`` for the last one) and the final features.

        Args:
            x: image batch (B, in_chans, H, W).
            indices: the last n stages if an int, all if None, else the stage indices to return.
            norm: apply the final norm to the last stage's output (the only one it is sized for).
            stop_early: stop after the last requested stage.
            output_fmt: 'NCHW' (or 'NHWC' for families whose stages work channels-last).
            intermediates_only: return only the list of stage outputs.
        """
        formats = ("NCHW", "NHWC") if self._nhwc_stages else ("NCHW",)
        if output_fmt not in formats:
            allowed = " or ".join(map(repr, formats))
            raise ValueError(f"{self._family}: output_fmt must be {allowed}, got {output_fmt!r}")
        to_fmt = (lambda t: t.permute(0, 3, 1, 2)) if self._nhwc_stages and output_fmt == "NCHW" else (lambda t: t)
        all_stages = getattr(self, self._stages_attr)
        take_indices, max_index = feature_take_indices(len(all_stages), indices)
        last_index = len(all_stages) - 1
        stages = all_stages if torch.jit.is_scripting() or not stop_early else all_stages[: max_index + 1]
        intermediates = []
        if self._stem_attr is not None:
            x = getattr(self, self._stem_attr)(x)
        for i, stage in enumerate(stages):
            x = self._run_stage(stage, x)
            if i in take_indices:
                intermediates.append(to_fmt(self._final_norm(x) if norm and i == last_index else x))
        if intermediates_only:
            return intermediates
        if i == last_index:
            x = self._final_norm(x)
        return (x.permute(0, 3, 1, 2) if self._nhwc_stages else x), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the final norm / head where they no longer fit)."""
        stages = getattr(self, self._stages_attr)
        take_indices, max_index = feature_take_indices(len(stages), indices)
        truncated = max_index < len(stages) - 1
        if self._norm_attr is not None and (prune_norm or truncated):
            setattr(self, self._norm_attr, nn.Identity())
        setattr(self, self._stages_attr, stages[: max_index + 1])
        if truncated:
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or truncated:
            self.reset_classifier(0, "", reset_other=True)
        return take_indices
