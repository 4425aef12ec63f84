"""EfficientViTFPN against an explicit re-computation, and the pyramids the EfficientViT detectors need."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("mmdet")
pytestmark = pytest.mark.mm

from backbones.mm.efficientvit_fpn import EfficientViTFPN  # noqa: E402


def _maps(channels, sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(1, c, h, w, generator=g) for c, (h, w) in zip(channels, sizes))


def _reference(neck: EfficientViTFPN, inputs):
    """Plain convs, written out: laterals, nearest top-down sum, transposed-conv levels, output convs."""

    def conv(m, x, stride=1, padding=0):
        return F.conv2d(x, m.conv.weight, m.conv.bias, stride=stride, padding=padding)

    lat = [conv(m, x) for m, x in zip(neck.lateral_convs, inputs)]
    for i in (2, 1):
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="nearest")
    fine, prev = [], lat[0]
    for m in neck.extra_trans_convs:
        prev = F.conv_transpose2d(prev, m.conv.weight, m.conv.bias, stride=2)
        fine.append(prev)  # coarse to fine
    fine = fine[::-1]
    outs = [conv(neck.extra_fpn_convs[t], f, padding=1) for t, f in enumerate(fine)]
    outs += [conv(neck.fpn_convs[i], lat[i], padding=1) for i in range(3)]
    if len(neck.fpn_convs) > 3:
        outs.append(conv(neck.fpn_convs[3], inputs[-1], stride=2, padding=1))
    return outs


@pytest.mark.parametrize(
    "kwargs, strides",
    [
        (dict(num_extra_trans_convs=1, add_extra_convs="on_input"), [8, 16, 32, 64, 128]),  # RetinaNet
        (dict(num_extra_trans_convs=2), [4, 8, 16, 32, 64]),  # Mask R-CNN
    ],
)
def test_matches_reference_and_gives_detector_strides(kwargs, strides):
    torch.manual_seed(0)
    neck = EfficientViTFPN([32, 48, 64], 16, num_outs=5, **kwargs)
    neck.init_weights()
    for m in neck.modules():  # nonzero biases everywhere (mmdet's init zeroes them)
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            torch.nn.init.normal_(m.bias)
    h, w = 256, 384
    inputs = _maps([32, 48, 64], [(h // 16, w // 16), (h // 32, w // 32), (h // 64, w // 64)])
    with torch.no_grad():
        outs = neck(inputs)
        ref = _reference(neck, inputs)
    assert len(outs) == 5
    for o, r, s in zip(outs, ref, strides):
        assert o.shape == (1, 16, h // s, w // s)
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)


def test_official_key_names_and_registry():
    from mmdet.registry import MODELS

    neck = MODELS.build(
        dict(type="EfficientViTFPN", in_channels=[128, 256, 384], out_channels=256, num_outs=5,
             num_extra_trans_convs=2)
    )
    keys = set(neck.state_dict())
    assert {"extra_trans_convs.1.conv.weight", "extra_fpn_convs.1.conv.bias", "lateral_convs.2.conv.weight"} <= keys
    assert neck.state_dict()["extra_trans_convs.0.conv.weight"].shape == (256, 256, 2, 2)
    with pytest.raises(ValueError, match="num_extra_trans_convs"):
        EfficientViTFPN([8, 8, 8], 8, num_outs=3, num_extra_trans_convs=3)
