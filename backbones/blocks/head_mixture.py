"""Mixture-of-Head attention (MoH, Jin et al. 2024, arXiv:2410.11842): heads as experts with a per-token router.

A multi-head mixer's heads are split into S *shared* heads (the first S, always active) and R = h - S *routed* heads
of which each token activates its top k. With x_n the token's input features (the mixer's input) and o_{n,i} the
output of head i for token n (before the output projection), the head outputs are re-weighted per token:

    p_n      = softmax(W_r x_n)                          over the R routed heads       (``wg``,   R x C)
    m_n      = 1 on the k largest entries of p_n, else 0
    g^r_n    = k * (p_n * m_n) / sum(p_n * m_n)                                          (renormalised, summing to k)
    g^s_n    = S * softmax(W_s x_n)        if S > 1, else 1                              (``wg_1``, S x C)
    (a, b)_n = 2 * softmax(W_0 x_n)        if S > 0 and k > 0                            (``wg_0``, 2 x C)
    gates_n  = [a_n g^s_n | b_n g^r_n]     (only g^r_n if S = 0, only g^s_n if k = 0, which needs S = h)
    out_{n,i} = gates_{n,i} * o_{n,i}

so the concatenation of ``out`` goes through the unchanged output projection (a head whose gate is 0 contributes
nothing; the sparsity saves no compute here, as in the official code). The gate layers have no bias. The factors
k, S and 2 keep the average gate at 1, as for plain multi-head attention. ``sum(p_n * m_n)`` is at least k / R
(the top k of R probabilities), so no guard against a zero denominator is needed.

Load balancing (training only, when k > 0): with f_e the share of tokens routed to head e and P_e the mean router
probability of e over all tokens of the batch,  L_aux = R^2 * mean_e(f_e P_e)  (f_e carries no gradient); the
official recipe adds 0.01 times the mean of L_aux over all routed layers to the loss
(:data:`MOH_AUX_LOSS_WEIGHT`). The latest value is kept in ``aux_loss`` (None until a training forward).

Top-k is ``torch.topk`` + ``scatter``: no data-dependent Python control flow, so torch.compile(fullgraph=True),
torch.export, TorchScript and FX (as a leaf module) capture it. Shapes: ``x`` (..., C) and ``heads`` (..., h, d)
with the same leading dims, e.g. (B, H, W, C) and (B, H, W, h, d), or (B, N, C) and (B, N, h, d); any sizes.
"""


from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_module
from torch import Tensor, nn

__all__ = ["HeadMixture", "MOH_AUX_LOSS_WEIGHT", "build_head_mixture"]

# Official MoH-ViT recipe: loss = task loss + 0.01 * mean over routed layers of L_aux.
MOH_AUX_LOSS_WEIGHT = 0.01


@register_notrace_module  # reason: the input check reads tensor ranks and sizes (FX proxies have none)
class HeadMixture(nn.Module):
    """Per-token weighting of a multi-head mixer's head outputs (see the module docstring for the math).

    Args:
        dim: channels C of the router input.
        num_heads: heads h of the mixer.
        shared_heads: S, the first S heads, always active.
        routed_heads: k, how many of the other h - S heads each token activates (0: no routing, then S = h).

    State-dict keys as the official MoH attention: ``wg`` (routed logits), ``wg_0`` (shared-vs-routed weights),
    ``wg_1`` (shared logits), each present only where the official code creates it.
    """

    aux_loss: Tensor | None

    def __init__(self, dim: int, num_heads: int, shared_heads: int, routed_heads: int, device=None, dtype=None):
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        for name, value in (("dim", dim), ("num_heads", num_heads), ("shared_heads", shared_heads),
                            ("routed_heads", routed_heads)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"HeadMixture: {name} must be a non-negative int, got {value!r}")
        pool = num_heads - shared_heads
        if routed_heads > 0 and not 0 <= shared_heads < num_heads:
            raise ValueError(f"HeadMixture: shared_heads={shared_heads} must lie in 0..num_heads - 1 = "
                             f"{num_heads - 1} when heads are routed")
        if routed_heads > pool:
            raise ValueError(f"HeadMixture: routed_heads={routed_heads} must be at most num_heads - shared_heads = "
                             f"{pool} (the routed pool)")
        if routed_heads == 0 and not (shared_heads == num_heads and shared_heads > 1):
            raise ValueError(f"HeadMixture: without routed heads every head is shared: shared_heads must equal "
                             f"num_heads={num_heads} (> 1), got {shared_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.shared_heads = shared_heads
        self.routed_heads = routed_heads
        self.num_routable = pool if routed_heads > 0 else 0
        # Official attribute names; an absent layer is None (TorchScript drops the branch).
        self.wg = nn.Linear(dim, pool, bias=False, **dd) if routed_heads > 0 else None
        self.wg_0 = nn.Linear(dim, 2, bias=False, **dd) if routed_heads > 0 and shared_heads > 0 else None
        self.wg_1 = nn.Linear(dim, shared_heads, bias=False, **dd) if shared_heads > 1 else None
        self.aux_loss = None

    def gates(self, x: Tensor) -> Tensor:
        """(..., h) per-head weights of the tokens ``x`` (..., C); records ``aux_loss`` in training mode."""
        shared = torch.ones_like(x[..., :1])  # S = 1: the one shared head has weight 1
        if self.wg_1 is not None:
            shared = F.softmax(self.wg_1(x), dim=-1) * self.shared_heads
        if self.wg is None:
            return shared
        probs = F.softmax(self.wg(x), dim=-1)  # (..., R)
        _, top = torch.topk(probs, self.routed_heads, dim=-1)
        mask = torch.zeros_like(probs).scatter(-1, top, 1.0)
        if self.training:
            tokens = probs.reshape(-1, self.num_routable)
            routed_share = mask.reshape(-1, self.num_routable).mean(0)
            self.aux_loss = (tokens.mean(0) * routed_share).mean() * self.num_routable**2
        kept = probs * mask
        routed = kept / kept.sum(-1, keepdim=True) * self.routed_heads
        if self.wg_0 is None:  # S = 0: routed heads only
            return routed
        mix = F.softmax(self.wg_0(x), dim=-1) * 2.0  # (..., 2): shared vs routed
        return torch.cat([shared * mix[..., :1], routed * mix[..., 1:]], dim=-1)

    def forward(self, x: Tensor, heads: Tensor) -> Tensor:
        if heads.dim() != x.dim() + 1 or heads.shape[-2] != self.num_heads or x.shape[-1] != self.dim:
            raise ValueError(f"HeadMixture: expected x (..., {self.dim}) and heads (..., {self.num_heads}, head_dim) "
                             f"with the same leading dims, got {list(x.shape)} and {list(heads.shape)}")
        return heads * self.gates(x).unsqueeze(-1).to(heads.dtype)

    def __getstate__(self) -> dict[str, Any]:
        # copy.deepcopy / pickle (e.g. an EMA copy made after a training step): the recorded loss is a non-leaf
        # tensor of the latest graph, which cannot be copied and belongs to that step only
        state = super().__getstate__()
        return dict(state, aux_loss=None)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, shared_heads={self.shared_heads}, " \
               f"routed_heads={self.routed_heads}"


def build_head_mixture(
    dim: int, num_heads: int, moh: dict[str, Any] | None, owner: str, **dd: Any
) -> HeadMixture | None:
    """The ``moh=`` option of a multi-head mixer: None (plain multi-head attention) or
    ``dict(shared_heads=S, routed_heads=k)``."""
    if moh is None:
        return None
    if not isinstance(moh, dict) or set(moh) != {"shared_heads", "routed_heads"}:
        raise ValueError(f"{owner}: moh must be None or dict(shared_heads=S, routed_heads=k), got {moh!r}")
    return HeadMixture(dim, num_heads, moh["shared_heads"], moh["routed_heads"], **dd)
