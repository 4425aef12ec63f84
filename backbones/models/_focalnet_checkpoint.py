"""FocalNet checkpoints: the official microsoft/FocalNet layout, and focal kernels / levels fitted to the model.

:func:`checkpoint_filter_fn` maps official or timm-layout weights onto a :class:`~backbones.models.focalnet.FocalNet`
(re-exported there), including the detection/segmentation recipe of loading classification weights into a model
built with larger focal windows or more focal levels.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from torch import Tensor

from ..blocks import FocalModulation
from ._common import drop_absent_classifier, unwrap_state_dict

if TYPE_CHECKING:
    from .focalnet import FocalNet

__all__ = ["checkpoint_filter_fn"]

_logger = logging.getLogger("backbones.models.focalnet")


def _official_to_timm(state_dict: dict[str, Tensor], model: FocalNet) -> dict[str, Tensor]:
    """Rename the official microsoft/FocalNet classification keys to ours (= timm's)."""
    target = model.state_dict()
    post_norm = any(k.endswith(".norm1_post.weight") for k in target)
    out = {}
    for k, v in state_dict.items():
        k = re.sub(r"^patch_embed\.", "stem.", k)
        # Official downsamples close stage i; ours (timm's) open stage i + 1.
        k = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) + 1}.downsample.", k)
        k = re.sub(r"\.gamma_([12])$", r".ls\1.gamma", k)
        k = re.sub(r"\.modulation\.ln\.", ".modulation.norm.", k)
        if post_norm:  # official L/XL/H keep the names norm1/norm2 for what are post-norms
            k = re.sub(r"\.norm([12])\.", r".norm\1_post.", k)
        k = re.sub(r"^head\.", "head.fc.", k)
        if v.ndim == 2 and k in target and target[k].ndim == 4:  # nn.Linear (out, in) -> 1x1 conv (out, in, 1, 1)
            v = v[:, :, None, None]
        out[k] = v
    return out


def _fit_kernel(kernel: Tensor, size: tuple[int, int]) -> Tensor:
    """Centre a depthwise kernel in a zero kernel of ``size`` (or centre-crop it when ``size`` is smaller)."""
    out = kernel.new_zeros(*kernel.shape[:-2], *size)
    src, dst = [], []
    for have, want in zip(kernel.shape[-2:], size):
        offset = abs(want - have) // 2
        n = min(have, want)
        src.append(slice(offset, offset + n) if have > want else slice(0, n))
        dst.append(slice(offset, offset + n) if want > have else slice(0, n))
    out[..., dst[0], dst[1]] = kernel[..., src[0], src[1]]
    return out


def _regate(f_param: Tensor, dim: int, levels: int, target_levels: int) -> Tensor:
    """Re-arrange ``modulation.f`` output rows [q (C) | ctx (C) | level gates (L) | global gate] for more levels.

    As the official detection loader does: q, ctx and the existing level gates keep their rows, the global gate
    moves to the last row and the new levels' gates are zero.
    """
    out = f_param.new_zeros(2 * dim + target_levels + 1, *f_param.shape[1:])
    out[: 2 * dim + levels] = f_param[: 2 * dim + levels]
    out[-1] = f_param[-1]
    return out


def _adapt_focal_levels_and_kernels(state_dict: dict[str, Tensor], model: FocalNet) -> dict[str, Tensor]:
    """Fit focal kernels and ``f`` gate rows of a checkpoint to the model's focal windows and levels."""
    target = model.state_dict()
    out = dict(state_dict)
    grown = set()  # modulation prefixes whose focal levels were added
    for name, module in model.named_modules():
        if not isinstance(module, FocalModulation):
            continue
        prefix = f"{name}." if name else ""
        weight, bias = out.get(prefix + "f.weight"), out.get(prefix + "f.bias")
        if weight is None or weight.shape[1] != module.dim:
            continue
        levels = weight.shape[0] - 2 * module.dim - 1
        if levels == module.focal_levels or levels < 1:
            continue
        if levels > module.focal_levels:
            raise ValueError(
                f"checkpoint has {levels} focal levels at {prefix}f but the model has {module.focal_levels}; "
                "only adding levels is supported (build the model with at least as many focal_levels)"
            )
        out[prefix + "f.weight"] = _regate(weight, module.dim, levels, module.focal_levels)
        if bias is not None:
            out[prefix + "f.bias"] = _regate(bias, module.dim, levels, module.focal_levels)
        grown.add(prefix)
        _logger.info(
            "%sf: %d -> %d focal levels (new gates zero, new kernels keep their init)",
            prefix,
            levels,
            module.focal_levels,
        )

    for k, want in target.items():
        m = re.fullmatch(r"(.*)focal_layers\.\d+\.0\.weight", k)
        if m is None:
            continue
        have = out.get(k)
        if have is None:
            if m[1] in grown:  # a level the checkpoint does not have: keep the model's own initialisation
                out[k] = want.clone()
            continue
        if have.shape[:2] == want.shape[:2] and have.shape[-2:] != want.shape[-2:]:
            out[k] = _fit_kernel(have, tuple(want.shape[-2:]))
    return out


def checkpoint_filter_fn(state_dict: dict[str, Any], model: FocalNet) -> dict[str, Tensor]:
    """Map a checkpoint onto ``model``: official or timm layout, any focal windows, fewer focal levels.

    * official microsoft/FocalNet classification weights are renamed to timm's layout (``patch_embed`` ->
      ``stem``, downsample shifted to the next stage, ``gamma_N`` -> ``lsN.gamma``, post-norm ``normN`` ->
      ``normN_post``, ``modulation.ln`` -> ``modulation.norm``, ``head`` -> ``head.fc``, Linear -> 1x1 conv);
      timm-layout dicts pass through;
    * focal kernels of another size are zero-padded centred (exact: same outputs with "same" padding) or
      centre-cropped (approximate), e.g. 3/5 -> 9/11 for a detection model built with ``focal_windows=9``;
    * a model with more focal levels gets the official re-arrangement of the ``f`` rows (see :func:`_regate`);
    * the classifier is dropped when the model has none.
    """
    state_dict = unwrap_state_dict(state_dict)
    if "stem.proj.weight" not in state_dict and "patch_embed.proj.weight" in state_dict:
        state_dict = _official_to_timm(state_dict, model)
    return _adapt_focal_levels_and_kernels(drop_absent_classifier(state_dict, model), model)
