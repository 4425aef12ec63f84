"""HaloAttention against a per-query naive reference (explicit windows, explicit relative-table rows, explicit
padding rule), in both mask modes and on both code paths (autograd and inference); and against timm's HaloAttn
at the sizes timm accepts."""

from __future__ import annotations

import math

import pytest
import torch
from timm.layers.halo_attn import HaloAttn

from backbones.blocks import HaloAttention

# (constructor kwargs, H, W): one block, stride 1 and 2 (strided queries, b even), odd b with stride 2 (average
# pool), values wider than queries/keys, bias + scaled position logits, halo 0, sizes (not) multiples of b.
CASES = [
    (dict(dim=8, num_heads=2, block_size=4, halo_size=1), 9, 11),
    (dict(dim=8, num_heads=2, block_size=4, halo_size=2), 4, 4),  # a single block
    (dict(dim=8, num_heads=2, block_size=4, halo_size=2), 8, 12),
    (dict(dim=8, num_heads=2, block_size=4, halo_size=2, stride=2), 9, 14),
    (dict(dim=8, num_heads=1, block_size=3, halo_size=1, stride=2), 7, 10),
    (dict(dim=8, dim_out=12, num_heads=2, dim_head=2, block_size=4, halo_size=1), 6, 9),
    (dict(dim=8, num_heads=2, block_size=2, halo_size=1, qkv_bias=True, scale_pos_embed=True), 5, 7),
    (dict(dim=8, num_heads=2, block_size=4, halo_size=0, stride=2, avg_down=True), 10, 6),
]


def _project(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """A 1x1 convolution (stride 1) as a per-pixel matrix product: (B, C, H, W) -> (B, O, H, W)."""
    y = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x)
    return y if conv.bias is None else y + conv.bias[None, :, None, None]


def naive_halo_attention(x: torch.Tensor, m: HaloAttention, mask_padding: bool) -> torch.Tensor:
    """One query at a time: gather its block's window pixel by pixel, pixels outside the image are zero keys and
    values (or left out with ``mask_padding``), logits s*q.k + q.R_h[w-1+kr-qr] + q.R_w[w-1+kc-qc]."""
    B, _, H, W = x.shape
    heads, dqk, dv = m.num_heads, m.dim_head_qk, m.dim_head_v
    b, h = m.block_size, m.halo_size
    win = b + 2 * h
    strided = m.q.stride[0] == 2
    bq = b // 2 if strided else b
    q_all = _project(x, m.q)  # full resolution; strided queries are read at even pixels below
    kv_all = _project(x, m.kv)
    Hq, Wq = (math.ceil(H / 2), math.ceil(W / 2)) if strided else (H, W)
    out = torch.zeros(B, heads * dv, Hq, Wq, dtype=x.dtype)
    for n in range(B):
        for head in range(heads):
            base = head * (dqk + dv)  # the kv projection is grouped per head: [k (dqk) | v (dv)]
            for qy in range(Hq):
                for qx in range(Wq):
                    by, bx = qy // bq, qx // bq  # query block
                    qr, qc = qy % bq, qx % bq  # position inside the block
                    py, px = (2 * qy, 2 * qx) if strided else (qy, qx)
                    q = q_all[n, head * dqk : (head + 1) * dqk, py, px]
                    # the window's pixels, row-major: table rows, image coordinates, inside the image or not
                    pixels = [(kr, kc, by * b - h + kr, bx * b - h + kc) for kr in range(win) for kc in range(win)]
                    inside = [0 <= ky < H and 0 <= kx < W for _, _, ky, kx in pixels]
                    if mask_padding:
                        pixels = [p for p, ok in zip(pixels, inside) if ok]
                        inside = [True] * len(pixels)
                    keys = torch.stack(
                        [
                            kv_all[n, base : base + dqk + dv, ky, kx] if ok else torch.zeros(dqk + dv)
                            for (_, _, ky, kx), ok in zip(pixels, inside)
                        ]
                    )
                    k, v = keys[:, :dqk], keys[:, dqk:]
                    rows = m.pos_embed.height_rel[[win - 1 + kr - qr for kr, _, _, _ in pixels]]
                    cols = m.pos_embed.width_rel[[win - 1 + kc - qc for _, kc, _, _ in pixels]]
                    rel = rows @ q + cols @ q
                    logits = (k @ q + rel) * m.scale if m.scale_pos_embed else k @ q * m.scale + rel
                    p = torch.softmax(logits, 0)
                    out[n, head * dv : (head + 1) * dv, qy, qx] = (p[:, None] * v).sum(0)
    if m.avg_pool:  # 2x2 mean over the pixels that exist (ceil mode at an odd border)
        pooled = torch.zeros(B, out.shape[1], math.ceil(H / 2), math.ceil(W / 2))
        for i in range(pooled.shape[-2]):
            for j in range(pooled.shape[-1]):
                pooled[:, :, i, j] = out[:, :, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean((-2, -1))
        out = pooled
    return out


def _module(kwargs: dict, mask_padding: bool) -> HaloAttention:
    torch.manual_seed(0)
    m = HaloAttention(**kwargs, mask_padding=mask_padding)
    if m.q.bias is not None:
        with torch.no_grad():
            m.q.bias.normal_()
            m.kv.bias.normal_()
    return m


@pytest.mark.parametrize("mask_padding", [False, True], ids=["zero-halo", "masked"])
@pytest.mark.parametrize("kwargs,H,W", CASES)
def test_matches_naive_reference_both_paths(kwargs, H, W, mask_padding):
    m = _module(kwargs, mask_padding)
    x = torch.randn(2, kwargs["dim"], H, W)
    ref = naive_halo_attention(x, m, mask_padding)
    stride = kwargs.get("stride", 1)
    assert ref.shape == (2, m.num_heads * m.dim_head_v, math.ceil(H / stride), math.ceil(W / stride))
    with torch.no_grad():
        fused = m(x)  # inference path (scaled_dot_product_attention)
    trained = m(x)  # autograd path (baddbmm / softmax / bmm)
    torch.testing.assert_close(fused, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(trained, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mask_padding", [False, True], ids=["zero-halo", "masked"])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(dim=8, num_heads=2, block_size=4, halo_size=1, stride=2, qkv_bias=True),  # equal q/k and v widths
        dict(dim=8, dim_out=12, num_heads=2, dim_head=2, block_size=4, halo_size=1, stride=2),  # unequal
    ],
    ids=["d_qk=d_v", "d_qk<d_v"],
)
def test_gradients_match_naive_reference(kwargs, mask_padding):
    m = _module(kwargs, mask_padding)
    x = torch.randn(1, 8, 7, 9, requires_grad=True)
    weight = torch.randn(1, m.num_heads * m.dim_head_v, 4, 5)
    grads = []
    for fn in (lambda: m(x), lambda: naive_halo_attention(x, m, mask_padding)):
        m.zero_grad()
        x.grad = None
        (fn() * weight).sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in m.parameters()])
    names = ["x"] + [n for n, _ in m.named_parameters()]
    for name, ours, ref in zip(names, *grads):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5, msg=lambda s, name=name: f"{name}: {s}")


def test_mask_modes_agree_without_padding():
    """With no halo and H, W multiples of b no key is padding: both modes give the same output."""
    kwargs = dict(dim=8, num_heads=2, block_size=4, halo_size=0)
    x = torch.randn(1, 8, 8, 12)
    with torch.no_grad():
        torch.testing.assert_close(_module(kwargs, False)(x), _module(kwargs, True)(x))


@pytest.mark.parametrize(
    "kwargs,H,W",
    [
        (dict(dim=32, num_heads=4, block_size=8, halo_size=3), 16, 24),
        (dict(dim=32, num_heads=4, block_size=8, halo_size=2, stride=2), 16, 32),
        (dict(dim=32, num_heads=2, block_size=7, halo_size=2, stride=2, qk_ratio=0.5), 14, 28),
        (dict(dim=32, dim_out=48, num_heads=4, dim_head=4, block_size=4, halo_size=1, qkv_bias=True), 8, 12),
        (dict(dim=32, num_heads=4, block_size=4, halo_size=1, scale_pos_embed=True), 8, 8),
    ],
)
def test_matches_timm_halo_attn_with_its_weights(kwargs, H, W):
    """timm's HaloAttn (which asserts H, W multiples of b) loads into ours unchanged and gives the same output."""
    torch.manual_seed(0)
    theirs = HaloAttn(**kwargs)
    if kwargs.get("qkv_bias"):
        with torch.no_grad():
            theirs.q.bias.normal_()
            theirs.kv.bias.normal_()
    ours = HaloAttention(**kwargs)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 32, H, W)
    expected = theirs(x)
    torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-5)


def test_any_size_output_shape_and_finite_gradients():
    m = HaloAttention(16, num_heads=4, block_size=8, halo_size=3, stride=2, mask_padding=True)
    x = torch.randn(2, 16, 13, 27, requires_grad=True)
    y = m(x)
    assert y.shape == (2, 16, 7, 14)
    y.square().mean().backward()
    assert torch.isfinite(x.grad).all() and all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_bad_arguments_have_clear_errors():
    with pytest.raises(ValueError, match="dim_out=10 must be divisible by num_heads=4"):
        HaloAttention(8, 10, num_heads=4)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        HaloAttention(8, stride=3)
