"""ONNX translations for the operators of this repository that have no entry in torch.onnx's default (dynamo)
exporter.

``torch.onnx.export(model, args, dynamo=True, custom_translation_table=custom_translation_table())``

* ``torchvision::deform_conv2d`` (LITv2's deformable token merging) -> ONNX ``DeformConv`` (opset 19): the same
  offset layout ((dy, dx) per kernel tap, taps row-major), bilinear sampling with zeros outside the map, optional
  modulation mask. onnxruntime runs it on CPU.
* ``aten::sort.stable`` (BiFormer's region routing: a stable descending sort, ties to the lower region index) ->
  ONNX ``TopK`` over the whole axis, sorted: TopK breaks ties by the lower index, which is the stable order. The
  exporter has no function for ``sort`` at all.
"""

from __future__ import annotations

from typing import Any

__all__ = ["custom_translation_table"]


def _deform_conv2d(
    input,
    weight,
    offset,
    mask,
    bias,
    stride_h: int,
    stride_w: int,
    pad_h: int,
    pad_w: int,
    dilation_h: int,
    dilation_w: int,
    groups: int,
    offset_groups: int,
    use_mask: bool,
):
    from onnxscript import opset19 as op

    return op.DeformConv(
        input,
        weight,
        offset,
        bias,
        mask if use_mask else None,
        dilations=[dilation_h, dilation_w],
        group=groups,
        offset_group=offset_groups,
        pads=[pad_h, pad_w, pad_h, pad_w],
        strides=[stride_h, stride_w],
    )


def _sort_stable(self, stable: bool | None = None, dim: int = -1, descending: bool = False):
    from onnxscript import opset18 as op

    axis_len = op.Shape(self, start=dim) if dim == -1 else op.Shape(self, start=dim, end=dim + 1)
    values, indices = op.TopK(self, axis_len, axis=dim, largest=1 if descending else 0, sorted=1)
    return values, indices


def custom_translation_table() -> dict[Any, Any]:
    """``custom_translation_table`` for ``torch.onnx.export`` covering every model of this repository."""
    import torch
    import torchvision  # noqa: F401  (registers torch.ops.torchvision)

    return {
        torch.ops.torchvision.deform_conv2d.default: _deform_conv2d,
        torch.ops.aten.sort.stable: _sort_stable,
    }
