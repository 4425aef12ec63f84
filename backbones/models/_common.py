"""Helpers shared by every model family: input validation and checkpoint unwrapping."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["check_input", "unwrap_state_dict", "load_state_dict_checked", "load_checkpoint"]


def check_input(x: Tensor, in_chans: int, min_size: int, model: str) -> None:
    """Raise a clear error for input a model cannot take.

    Args:
        x: the image batch, expected (B, in_chans, H, W).
        in_chans: channels the model was built for.
        min_size: smallest H and W the network accepts (usually its total stride).
        model: the model's class or architecture name, used in the message.
    """
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

    ``checkpoint`` is a path (``.pth``/``.pt``/``.bin``/``.safetensors``) or an already loaded object. Wrappers
    and prefixes are removed (:func:`unwrap_state_dict`; ``use_ema`` picks EMA weights when both are saved),
    then the family's ``checkpoint_filter_fn`` maps official layouts onto ours (it passes our own layout
    through), then the keys and shapes are checked.
    """
    import sys

    if isinstance(checkpoint, str):
        if checkpoint.endswith(".safetensors"):
            from safetensors.torch import load_file

            checkpoint = load_file(checkpoint, device="cpu")
        else:
            checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=False)
    sd = unwrap_state_dict(checkpoint, use_ema=use_ema)
    if filter_fn is None:
        filter_fn = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if filter_fn is not None:
        sd = filter_fn(sd, model)
    return load_state_dict_checked(model, sd, strict=strict)
