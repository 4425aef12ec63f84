"""Shifted-window attention against a per-token loop: explicit windows of the padded, rolled map, the relative
offset table looked up by (dy + wh - 1, dx + ww - 1), Swin's region labels for the mask, softmax in float64."""

from __future__ import annotations

import pytest
import torch

from backbones.blocks import ShiftedWindowAttention, create_mixer


def naive_swin(m: ShiftedWindowAttention, x: torch.Tensor) -> torch.Tensor:
    """One image x (H, W, C)."""
    h, w, c = x.shape
    wh, ww = m.window_size
    heads, d = m.num_heads, c // m.num_heads
    hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
    xp = torch.zeros(hp, wp, c, dtype=x.dtype)
    xp[:h, :w] = x
    s = m.shift_size if (h > wh or w > ww) else 0

    # region label of every padded position (Swin: three bands per axis, cut at -window and -shift)
    def band(i: int, n: int, win: int) -> int:
        return 0 if i < n - win else (1 if i < n - s else 2)

    qkv = xp @ m.qkv.weight.T + m.qkv.bias
    out = torch.zeros(hp, wp, c, dtype=x.dtype)
    table = m.relative_position_bias_table
    for oy in range(0, hp, wh):
        for ox in range(0, wp, ww):
            # window tokens in rolled coordinates (oy + i, ox + j) come from (oy + i + s, ox + j + s) mod size
            pos = [(oy + i, ox + j) for i in range(wh) for j in range(ww)]
            src = [((py + s) % hp, (px + s) % wp) for py, px in pos]
            labels = [3 * band(py, hp, wh) + band(px, wp, ww) if s else 0 for py, px in pos]
            for t, (py, px) in enumerate(pos):
                q = qkv[src[t]][:c]
                for hd in range(heads):
                    sl = slice(hd * d, (hd + 1) * d)
                    logits = []
                    for u, (ry, rx) in enumerate(pos):
                        k = qkv[src[u]][c : 2 * c]
                        bias = table[(py - ry + wh - 1) * (2 * ww - 1) + (px - rx + ww - 1), hd]
                        mask = 0.0 if labels[t] == labels[u] else -100.0
                        logits.append(m.scale * q[sl] @ k[sl] + bias + mask)
                    weights = torch.softmax(torch.stack(logits), 0)
                    vals = torch.stack([qkv[src[u]][2 * c :][sl] for u in range(len(pos))])
                    out[src[t]][sl] = weights @ vals
    return out[:h, :w] @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize("hw, shift", [((8, 8), 0), ((8, 8), 2), ((7, 10), 2), ((3, 4), 2)],
                         ids=["plain", "shifted", "padded-shifted", "one-window-not-shifted"])  # fmt: skip
def test_matches_naive_reference(hw, shift):
    torch.manual_seed(0)
    m = ShiftedWindowAttention(8, 2, window_size=4, shift_size=shift).double().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        x = torch.randn(2, *hw, 8, dtype=torch.float64)
        out = m(x)
        for b in range(2):
            torch.testing.assert_close(out[b], naive_swin(m, x[b]), rtol=1e-9, atol=1e-9)


def test_registry_keys_and_errors():
    m = create_mixer("swin", 16, 2, window_size=7, shift_size=3)
    assert isinstance(m, ShiftedWindowAttention)
    assert {n for n, _ in m.named_parameters()} == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias",
                                                     "relative_position_bias_table"}  # fmt: skip
    assert "relative_position_index" not in m.state_dict()  # recomputed, as timm's
    with pytest.raises(ValueError, match="shift_size"):
        ShiftedWindowAttention(16, 2, window_size=4, shift_size=4)
    with pytest.raises(ValueError, match=r"expected x of shape \(B, H, W, 16\)"):
        m(torch.randn(1, 16, 8, 8))
