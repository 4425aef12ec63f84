"""Agent attention against a per-token loop written from the paper and the official Agent-PVT formulation.

The reference builds every position bias entry by an explicit bilinear formula (align_corners=False: source
coordinate (i + 0.5) * in / out - 0.5, clamped), pools the agents by explicit averages over the adaptive-pool bins,
runs the two softmax attentions token by token in float64 and adds a depthwise-conv loop of v.
"""

from __future__ import annotations

import math

import pytest
import torch

from backbones.blocks import AgentAttention, create_mixer


def lerp_index(i: int, n_out: int, n_in: int) -> tuple[int, int, float]:
    src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
    lo = min(int(math.floor(src)), n_in - 1)
    hi = min(lo + 1, n_in - 1)
    return lo, hi, src - lo


def bilinear(t: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Resize the last two dims of t by the bilinear formula, entry by entry."""
    in_h, in_w = t.shape[-2:]
    out = torch.zeros(*t.shape[:-2], out_h, out_w, dtype=t.dtype)
    for i in range(out_h):
        y0, y1, fy = lerp_index(i, out_h, in_h)
        for j in range(out_w):
            x0, x1, fx = lerp_index(j, out_w, in_w)
            out[..., i, j] = ((1 - fy) * ((1 - fx) * t[..., y0, x0] + fx * t[..., y0, x1])
                              + fy * ((1 - fx) * t[..., y1, x0] + fx * t[..., y1, x1]))  # fmt: skip
    return out


def adaptive_bins(n_in: int, n_out: int) -> list[range]:
    return [range((i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)) for i in range(n_out)]


def naive_agent(m: AgentAttention, x: torch.Tensor) -> torch.Tensor:
    """One image x (H, W, C)."""
    h, w, c = x.shape
    heads, d, r, p = m.num_heads, m.head_dim, m.sr_ratio, m.pool_size
    ah, aw = m.agent_shape
    q = x @ m.q.weight.T + m.q.bias
    if r > 1:
        hp, wp = -(-h // r) * r, -(-w // r) * r
        xp = torch.zeros(hp, wp, c, dtype=x.dtype)
        xp[:h, :w] = x
        red = torch.stack([torch.stack([
            torch.einsum("ocij,ijc->o", m.sr.weight, xp[i * r:(i + 1) * r, j * r:(j + 1) * r]) + m.sr.bias
            for j in range(wp // r)]) for i in range(hp // r)])  # fmt: skip
        red = torch.nn.functional.layer_norm(red, (c,), m.norm.weight, m.norm.bias)
    else:
        red = x
    hk, wk = red.shape[:2]
    kv = red @ m.kv.weight.T + m.kv.bias
    k, v = kv[..., :c].reshape(hk * wk, c), kv[..., c:].reshape(hk, wk, c)
    qf = q.reshape(h * w, c)
    # agents: averages of q over the adaptive-pool bins, row-major
    agents = torch.stack([q[list(bi)][:, list(bj)].reshape(-1, c).mean(0)
                          for bi in adaptive_bins(h, ah) for bj in adaptive_bins(w, aw)])  # fmt: skip
    # biases on the trained agent grid (p x p), then resized along the agent axes
    b_ak = bilinear(m.an_bias, hk, wk) + bilinear((m.ah_bias + m.aw_bias)[0], hk, wk)  # (h, a0, hk, wk)
    b_ak = bilinear(b_ak.reshape(heads, p, p, hk * wk).permute(0, 3, 1, 2), ah, aw).reshape(heads, hk * wk, -1)
    rows_cols = (m.ha_bias + m.wa_bias)[0].permute(0, 3, 1, 2)
    b_qa = bilinear(m.na_bias, h, w) + bilinear(rows_cols, h, w)
    b_qa = bilinear(b_qa.reshape(heads, p, p, h * w).permute(0, 3, 1, 2), ah, aw).reshape(heads, h * w, -1)
    out = torch.zeros(h * w, c, dtype=x.dtype)
    vf = v.reshape(hk * wk, c)
    for hd in range(heads):
        sl = slice(hd * d, (hd + 1) * d)
        agent_v = []
        for a in range(ah * aw):
            logits = torch.stack([m.scale * agents[a, sl] @ k[t, sl] + b_ak[hd, t, a] for t in range(hk * wk)])
            agent_v.append(torch.softmax(logits, 0) @ vf[:, sl])
        agent_v = torch.stack(agent_v)
        for n in range(h * w):
            logits = torch.stack([m.scale * qf[n, sl] @ agents[a, sl] + b_qa[hd, n, a] for a in range(ah * aw)])
            out[n, sl] = torch.softmax(logits, 0) @ agent_v
    v_map = v.permute(2, 0, 1)[None]
    if r > 1:
        v_map = torch.nn.functional.interpolate(v_map, size=(h, w), mode="bilinear")  # checked by bilinear() below
        torch.testing.assert_close(v_map[0], bilinear(v.permute(2, 0, 1), h, w))
    v_map = v_map[0].permute(1, 2, 0)
    kk = m.dwc.kernel_size[0]
    conv = m.dwc.bias.expand(h, w, c).clone()
    for i in range(h):
        for j in range(w):
            for di in range(kk):
                for dj in range(kk):
                    y, xx = i + di - kk // 2, j + dj - kk // 2
                    if 0 <= y < h and 0 <= xx < w:
                        conv[i, j] += m.dwc.weight[:, 0, di, dj] * v_map[y, xx]
    return (out.reshape(h, w, c) + conv) @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize(
    "hw, sr, agent_shape",
    [((8, 8), 2, None), ((6, 10), 2, (3, 3)), ((5, 7), 1, None), ((7, 5), 2, (2, 3))],
    ids=["trained-grid", "other-size-and-agents", "sr1", "padded"],
)
def test_matches_naive_reference(hw, sr, agent_shape):
    torch.manual_seed(0)
    m = AgentAttention(16, 2, train_grid=8, sr_ratio=sr, agent_num=4, agent_shape=agent_shape).double().eval()
    with torch.no_grad():
        for prm in m.parameters():
            prm.copy_(torch.randn_like(prm) * 0.3)
        x = torch.randn(2, *hw, 16, dtype=torch.float64)
        out = m(x)
        for b in range(2):
            torch.testing.assert_close(out[b], naive_agent(m, x[b]), rtol=1e-9, atol=1e-9)


def test_official_parameter_shapes_and_registry():
    m = AgentAttention(64, 1, train_grid=56, sr_ratio=8, agent_num=49)  # Agent-PVT stage 1
    shapes = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes["an_bias"] == shapes["na_bias"] == (1, 49, 7, 7)
    assert shapes["ah_bias"] == (1, 1, 49, 7, 1) and shapes["aw_bias"] == (1, 1, 49, 1, 7)
    assert shapes["ha_bias"] == (1, 1, 56, 1, 49) and shapes["wa_bias"] == (1, 1, 1, 56, 49)
    assert shapes["sr.weight"] == (64, 64, 8, 8) and shapes["dwc.weight"] == (64, 1, 3, 3)
    assert isinstance(create_mixer("agent", 32, 2), AgentAttention)
    with pytest.raises(ValueError, match="square"):
        AgentAttention(32, 2, agent_num=10)
