"""Token-mixer registry: every mixer of the seven families, the baselines and the ablation mixers behind one contract.

``create_mixer(name, dim, num_heads=None, **kwargs)`` builds a module that maps a channels-last map (B, H, W, C) to a
map of the same shape, for any H, W >= 1 (each mixer pads / masks inside, as its family does). ``list_mixers()``
lists the names. Mixers whose family module is (B, H, W, C) already are returned as that very module (same class,
same state-dict keys, same Triton dispatch and ``last_kernel``); the NCHW ones (focal, halo, cascaded) are wrapped in
:class:`ChannelsFirstMixer`, which hands them a ``permute`` *view* (a channels_last-format NCHW tensor, no copy) and
permutes their output back. A mixer whose ``uses_stage_input`` attribute is True also takes ``stage_input=``,
the (B, H, W, C) map its stage started from (``decoupled``; see
:class:`backbones.models.hybrid.HybridNet`).

Costs are multiply-accumulates per image, N = H * W tokens of C channels, projections included (a C x C
projection is N C^2); k: a kernel / window side, S: regions per side, r: pool ratio, G: groups, h: heads:

| name | module | cost in N = H*W | main kwargs (defaults) | key paper |
|---|---|---|---|---|
| identity | ``nn.Identity`` | 0 | - | MetaFormer, arXiv:2111.11418 |
| pool | ``PoolMixer`` | N k^2 C adds | pool_size=3 | PoolFormer, arXiv:2111.11418 |
| dwconv | ``DWConvMixer`` | N k^2 C | kernel_size=7 | ConvNeXt, arXiv:2201.03545 |
| global | ``GlobalAttention`` | 2 N^2 C + 4 N C^2 | qkv_bias=True | ViT, arXiv:2010.11929 |
| window | ``WindowAttention`` | 2 N k^2 C + 4 N C^2 | window_size=7 | DaViT, arXiv:2204.03645 |
| channel | ``ChannelAttention`` | 2 N C^2 / G + 4 N C^2 | num_groups=num_heads | DaViT, arXiv:2204.03645 |
| routed | ``BiLevelRoutingAttention`` | 2 topk N^2 C / S^2 + 4 N C^2 | num_regions=7, topk=4 | BiFormer, 2303.08810 |
| hilo | ``HiLoAttention`` | 2 N (k^2 + N / k^2) C + 4 N C^2 | window_size=2, alpha=0.5 | LITv2, 2205.13213 |
| aggregated | ``AggregatedAttention`` | 2 N (k^2 + N / r^2) C + 5 N C^2 | window_size=3, pool_ratio=8 | TransNeXt |
| length_scaled | ``LengthScaledAttention`` | 2 N^2 C + 4 N C^2 | pretrain_grid=7 | TransNeXt, 2311.17132 |
| focal | ``FocalModulation`` | N C sum_l k_l^2 + 5 N C^2 | focal_levels=2, focal_window=3 | FocalNet, 2203.11926 |
| halo | ``HaloAttention`` + proj | 2 N (b + 2h)^2 C + 4 N C^2 | block_size=8, halo_size=3 | HaloNet, 2103.12731 |
| cascaded | ``LocalWindowAttention`` | N k^2 (2 key_dim + C / h) + N C^2 | window_size=7, key_dim=16 | EfficientViT |
| static | ``StaticMixer`` | N k^2 C + 2 N C^2 | window_size=7, mode="learned" | ablation: fixed weights |
| sigmoid | ``SigmoidAttention`` | 2 N^2 C + 4 N C^2 | bias=-ln N | sigmoid attention, 2409.04431 |
| linear | ``LinearAttention`` | 2 N d C + 4 N C^2 | eps=1e-6 (elu + 1 features) | linear attn, 2006.16236 |
| decoupled | ``DecoupledAttention`` | 2 N^2 C + 4 N C^2 | q, k from stage_input | ablation: q, k from the stage |
| rala | ``RankAugmentedLinearAttention`` | 3 N d C + 5 N C^2 + 25 N C | lepe_kernel_size=5 | RAVLT, 2411.07635 |
| rala_softmax | ``RoPEGatedAttention`` | 2 N^2 C + 5 N C^2 + 25 N C | lepe_kernel_size=5 | RAVLT, 2411.07635 |
| agent | ``AgentAttention`` | 4 N a C + 4 N C^2 + 9 N C | agent_num=49, sr_ratio=1, train_grid=14 | Agent, 2312.08874 |
| swin | ``ShiftedWindowAttention`` | 2 N k^2 C + 4 N C^2 | window_size=7, shift_size=0 | Swin, 2103.14030 |

(EfficientViT-MSRA: arXiv:2305.07027; TransNeXt: arXiv:2311.17132. Focal, halo and cascaded are the NCHW ones.
The four ablation mixers are in :mod:`backbones.blocks.ablation_mixers`, with their math.)

Defaults that differ from the families': ``halo`` adds an output projection (HaloNet puts a 1x1 conv after the
attention inside its bottleneck) and masks its padding; ``cascaded`` starts its output BatchNorm at gamma = 1 (the
family zero-inits it, which in a residual block with its own layer scale would cut every gradient upstream).
Mixture-of-Head attention (MoH, arXiv:2410.11842): ``aggregated``, ``length_scaled`` and ``global`` take
``moh=dict(shared_heads=S, routed_heads=k)``, a per-token router re-weighting the head outputs before the output
projection (:class:`backbones.blocks.head_mixture.HeadMixture`; adds at most (h + 2) C router weights);
without it they are unchanged.
``num_heads=None`` means dim // 32 heads (1 when dim < 32 or 32 does not divide dim). Mixers without heads
(identity, pool, dwconv, focal) ignore ``num_heads``.

FLOP counters: every mixer is plain modules and aten ops, so ``torch.utils.flop_counter`` and fvcore
(``tools/benchmark.py --flops torch|fvcore``) count them (fvcore does not count ``scaled_dot_product_attention``
itself, only the projections around it; the torch counter does).
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ._checks import check_shape
from .ablation_mixers import DecoupledAttention, LinearAttention, SigmoidAttention, StaticMixer
from .agent_attention import AgentAttention
from .aggregated_attention import AggregatedAttention, LengthScaledAttention
from .baseline_mixers import DWConvMixer, GlobalAttention, PoolMixer
from .bilevel_routing_attention import BiLevelRoutingAttention
from .cascaded_group_attention import LocalWindowAttention
from .channel_attention import ChannelAttention
from .focal_modulation import FocalModulation
from .halo_attention import HaloAttention
from .hilo_attention import HiLoAttention
from .rank_augmented_attention import RankAugmentedLinearAttention, RoPEGatedAttention
from .shifted_window_attention import ShiftedWindowAttention
from .window_attention import WindowAttention

__all__ = [
    "ChannelsFirstMixer",
    "MixerInfo",
    "create_mixer",
    "default_num_heads",
    "list_mixers",
    "mixer_info",
    "mixer_table",
    "register_mixer",
]


class ChannelsFirstMixer(nn.Module):
    """(B, H, W, C) adapter of an NCHW mixer: the mixer sees a permuted view (channels_last memory format, no copy).

    Args:
        mixer: the NCHW module (its state-dict keys move under ``mixer.``).
        dim: channels C (checked on input).
        proj: an optional ``nn.Linear`` applied to the (B, H, W, C) output.
    """

    def __init__(self, mixer: nn.Module, dim: int, proj: nn.Module | None = None):
        super().__init__()
        self.dim = dim
        self._expected = f"{type(mixer).__name__} (channels-last adapter): expected x of shape (B, H, W, {dim})"
        self.mixer = mixer
        self.proj = proj if proj is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = check_shape(x, 4, self.dim, -1, self._expected)
        return self.proj(self.mixer(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


@dataclass(frozen=True)
class MixerInfo:
    """One registry entry: the builder ``build(dim, num_heads, **kwargs)`` and its documentation."""

    name: str
    build: Callable[..., nn.Module]
    cost: str
    kwargs: str
    paper: str
    uses_heads: bool = True
    module: type[nn.Module] | None = None  # the class a ``**kwargs`` builder forwards its options to

    def options(self) -> list[str]:
        """The keyword options ``create_mixer`` accepts for this mixer (besides dim and num_heads)."""
        params = inspect.signature(self.build).parameters
        names = [p for p, v in params.items() if v.kind is not v.VAR_KEYWORD and p not in ("dim", "num_heads")]
        if self.module is not None and any(v.kind is v.VAR_KEYWORD for v in params.values()):
            names += [p for p in inspect.signature(self.module).parameters
                      if p not in ("self", "dim", "num_heads", *names)]
        return names


_MIXERS: dict[str, MixerInfo] = {}


def register_mixer(name: str, *, cost: str, kwargs: str, paper: str, uses_heads: bool = True,
                   module: type[nn.Module] | None = None) -> Callable:
    """Decorator registering ``build(dim, num_heads, **kwargs) -> nn.Module`` under ``name``.

    ``module``: the class a builder with ``**kwargs`` passes them to (its signature lists the accepted options).
    """

    def wrap(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MIXERS:
            raise RuntimeError(f"mixer {name!r} is registered twice ({_MIXERS[name].build.__module__})")
        _MIXERS[name] = MixerInfo(name, build, cost, kwargs, paper, uses_heads, module)
        return build

    return wrap


def list_mixers(pattern: str = "*") -> list[str]:
    """Registered mixer names (registration order), optionally filtered by an fnmatch pattern."""
    return [n for n in _MIXERS if fnmatch.fnmatch(n, pattern)]


def mixer_info(name: str) -> MixerInfo:
    """The registry entry of ``name``; an unknown name raises a ``ValueError`` listing the known ones."""
    if name not in _MIXERS:
        close = difflib.get_close_matches(str(name), list(_MIXERS), n=3)
        hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
        raise ValueError(f"unknown mixer {name!r}{hint}; known mixers: {', '.join(_MIXERS)}")
    return _MIXERS[name]


def default_num_heads(dim: int, head_dim: int = 32) -> int:
    """dim // head_dim heads when head_dim divides dim, else 1."""
    return dim // head_dim if dim >= head_dim and dim % head_dim == 0 else 1


def create_mixer(name: str, dim: int, num_heads: int | None = None, **kwargs: Any) -> nn.Module:
    """Build mixer ``name`` for C = ``dim`` channels: a module mapping (B, H, W, C) to (B, H, W, C), any H and W.

    Args:
        name: one of :func:`list_mixers`.
        dim: channels C of the map.
        num_heads: attention heads (or channel groups); None picks :func:`default_num_heads`. Ignored by the mixers
            without heads.
        kwargs: the mixer's own options (see the table in the module docstring); ``device`` / ``dtype`` too.
    """
    info = mixer_info(name)
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ValueError(f"create_mixer({name!r}): dim must be a positive int (the channels C), got {dim!r}")
    if num_heads is None:
        num_heads = default_num_heads(dim)
    if info.uses_heads:
        if not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"create_mixer({name!r}, dim={dim}): num_heads must be a positive int, got {num_heads!r}")
        if dim % num_heads:
            raise ValueError(
                f"create_mixer({name!r}, dim={dim}, num_heads={num_heads}): num_heads must divide dim, because every "
                f"head takes dim / num_heads channels ({dim} / {num_heads} is not an integer); use a width that is a "
                f"multiple of the head count"
            )
    accepted = info.options()
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise TypeError(
            f"create_mixer({name!r}): unexpected argument(s) {unknown}; {name!r} takes {', '.join(accepted)}"
        )
    return info.build(dim, num_heads, **kwargs)


def mixer_table() -> str:
    """The registry as a Markdown table (name, cost, kwargs, paper), e.g. for docs."""
    rows = ["| name | cost in N = H*W | kwargs | key paper |", "|---|---|---|---|"]
    rows += [f"| {m.name} | {m.cost} | {m.kwargs} | {m.paper} |" for m in _MIXERS.values()]
    return "\n".join(rows)


# ----------------------------------------------------------------------------------------------------------------
# baselines


@register_mixer("identity", cost="0", kwargs="-", paper="MetaFormer (arXiv:2111.11418)", uses_heads=False)
def _identity(dim: int, num_heads: int, device=None, dtype=None) -> nn.Module:
    return nn.Identity()


@register_mixer("pool", cost="N k^2 C adds", kwargs="pool_size=3", paper="PoolFormer (arXiv:2111.11418)",
                uses_heads=False)
def _pool(dim: int, num_heads: int, pool_size: int = 3, device=None, dtype=None) -> nn.Module:
    return PoolMixer(dim, pool_size=pool_size)


@register_mixer("dwconv", cost="N k^2 C", kwargs="kernel_size=7", paper="ConvNeXt (arXiv:2201.03545)",
                uses_heads=False)
def _dwconv(dim: int, num_heads: int, kernel_size: int = 7, bias: bool = True, device=None, dtype=None) -> nn.Module:
    return DWConvMixer(dim, kernel_size=kernel_size, bias=bias, device=device, dtype=dtype)


@register_mixer("global", cost="2 N^2 C + 4 N C^2", kwargs="qkv_bias=True", paper="ViT (arXiv:2010.11929)",
                module=GlobalAttention)
def _global(dim: int, num_heads: int, **kwargs: Any) -> nn.Module:
    return GlobalAttention(dim, num_heads, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# the seven families' mixers


@register_mixer("window", cost="2 N k^2 C + 4 N C^2", kwargs="window_size=7", paper="DaViT (arXiv:2204.03645)",
                module=WindowAttention)
def _window(dim: int, num_heads: int, window_size: int | tuple[int, int] = 7, **kwargs: Any) -> nn.Module:
    return WindowAttention(dim, num_heads, window_size=window_size, **kwargs)


@register_mixer("channel", cost="2 N C^2 / G + 4 N C^2", kwargs="num_groups=num_heads",
                paper="DaViT (arXiv:2204.03645)", module=ChannelAttention)
def _channel(dim: int, num_heads: int, **kwargs: Any) -> nn.Module:
    groups = kwargs.pop("num_groups", num_heads)
    if dim % groups:
        raise ValueError(f"create_mixer('channel', dim={dim}): num_groups={groups} must divide dim (channel groups)")
    return ChannelAttention(dim, num_groups=groups, **kwargs)


@register_mixer("routed", cost="2 topk N^2 C / S^2 + 4 N C^2", kwargs="num_regions=7, topk=4",
                paper="BiFormer (arXiv:2303.08810)", module=BiLevelRoutingAttention)
def _routed(dim: int, num_heads: int, num_regions: int = 7, topk: int = 4, **kwargs: Any) -> nn.Module:
    if not 1 <= topk <= num_regions**2:
        raise ValueError(f"create_mixer('routed'): topk={topk} must lie in 1..num_regions**2 = {num_regions**2}")
    qk_dim = kwargs.get("qk_dim") or dim
    if qk_dim % num_heads:
        raise ValueError(f"create_mixer('routed', num_heads={num_heads}): qk_dim={qk_dim} must be divisible by it")
    return BiLevelRoutingAttention(dim, num_heads, num_regions=num_regions, topk=topk, **kwargs)


@register_mixer("hilo", cost="2 N (k^2 + N / k^2) C + 4 N C^2", kwargs="window_size=2, alpha=0.5",
                paper="LITv2 (arXiv:2205.13213)", module=HiLoAttention)
def _hilo(dim: int, num_heads: int, window_size: int = 2, alpha: float = 0.5, **kwargs: Any) -> nn.Module:
    return HiLoAttention(dim, num_heads, window_size=window_size, alpha=alpha, **kwargs)


@register_mixer("aggregated", cost="2 N (k^2 + N / r^2) C + 5 N C^2", kwargs="window_size=3, pool_ratio=8",
                paper="TransNeXt (arXiv:2311.17132)", module=AggregatedAttention)
def _aggregated(dim: int, num_heads: int, window_size: int = 3, pool_ratio: int = 8, **kwargs: Any) -> nn.Module:
    return AggregatedAttention(dim, num_heads, window_size=window_size, pool_ratio=pool_ratio, **kwargs)


@register_mixer("length_scaled", cost="2 N^2 C + 4 N C^2", kwargs="pretrain_grid=7",
                paper="TransNeXt (arXiv:2311.17132)", module=LengthScaledAttention)
def _length_scaled(dim: int, num_heads: int, pretrain_grid: int = 7, **kwargs: Any) -> nn.Module:
    return LengthScaledAttention(dim, num_heads, pretrain_grid=pretrain_grid, **kwargs)


@register_mixer("focal", cost="N C sum k_l^2 + 5 N C^2", kwargs="focal_levels=2, focal_window=3",
                paper="FocalNet (arXiv:2203.11926)", uses_heads=False, module=FocalModulation)
def _focal(dim: int, num_heads: int, focal_levels: int = 2, focal_window: int = 3, **kwargs: Any) -> nn.Module:
    return ChannelsFirstMixer(FocalModulation(dim, focal_levels, focal_window, **kwargs), dim)


@register_mixer("halo", cost="2 N (b + 2h)^2 C + 4 N C^2", kwargs="block_size=8, halo_size=3, proj=True",
                paper="HaloNet (arXiv:2103.12731)", module=HaloAttention)
def _halo(
    dim: int,
    num_heads: int,
    block_size: int = 8,
    halo_size: int = 3,
    proj: bool = True,
    mask_padding: bool = True,
    device=None,
    dtype=None,
    **kwargs: Any,
) -> nn.Module:
    dd = dict(device=device, dtype=dtype)
    if kwargs.get("stride", 1) != 1 or kwargs.get("dim_out", dim) != dim:
        raise ValueError("create_mixer('halo'): a token mixer keeps the map's size and width (stride=1, dim_out=dim)")
    attn = HaloAttention(dim, num_heads=num_heads, block_size=block_size, halo_size=halo_size,
                         mask_padding=mask_padding, **kwargs, **dd)
    return ChannelsFirstMixer(attn, dim, nn.Linear(dim, dim, **dd) if proj else None)


@register_mixer("cascaded", cost="N k^2 (2 key_dim + C / h) + N C^2", kwargs="window_size=7, key_dim=16",
                paper="EfficientViT-MSRA (arXiv:2305.07027)")
def _cascaded(
    dim: int,
    num_heads: int,
    window_size: int = 7,
    key_dim: int = 16,
    kernel_size: int = 5,
    proj_bn_init: float = 1.0,
    device=None,
    dtype=None,
) -> nn.Module:
    kernels = (kernel_size,) * num_heads
    attn = LocalWindowAttention(dim, key_dim, num_heads, window_size, kernels, proj_bn_init, device=device,
                                dtype=dtype)
    return ChannelsFirstMixer(attn, dim)


# ----------------------------------------------------------------------------------------------------------------
# ablation mixers (one principle of attention relaxed each; identity = no mixing is above)


@register_mixer("static", cost="N k^2 C + 2 N C^2", kwargs="window_size=7, mode='learned'|'pool'",
                paper="ablation: input-independent weights", module=StaticMixer)
def _static(dim: int, num_heads: int, **kwargs: Any) -> nn.Module:
    return StaticMixer(dim, num_heads, **kwargs)


@register_mixer("sigmoid", cost="2 N^2 C + 4 N C^2", kwargs="bias=None (-ln N)", paper="arXiv:2409.04431",
                module=SigmoidAttention)
def _sigmoid(dim: int, num_heads: int, **kwargs: Any) -> nn.Module:
    return SigmoidAttention(dim, num_heads, **kwargs)


@register_mixer("linear", cost="2 N d C + 4 N C^2", kwargs="eps=1e-6", paper="arXiv:2006.16236", module=LinearAttention)
def _linear(dim: int, num_heads: int, **kwargs: Any) -> nn.Module:
    return LinearAttention(dim, num_heads, **kwargs)


@register_mixer("decoupled", cost="2 N^2 C + 4 N C^2", kwargs="q, k from stage_input",
                paper="ablation: q, k from the stage input", module=DecoupledAttention)
def _decoupled(dim: int, num_heads: int, **kwargs: Any) -> nn.Module:
    return DecoupledAttention(dim, num_heads, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# further families' mixers


@register_mixer("rala", cost="3 N d C + 5 N C^2 + 25 N C", kwargs="lepe_kernel_size=5",
                paper="RAVLT (arXiv:2411.07635)", module=RankAugmentedLinearAttention)
def _rala(dim: int, num_heads: int, **kwargs: Any) -> nn.Module:
    return RankAugmentedLinearAttention(dim, num_heads, **kwargs)


@register_mixer("rala_softmax", cost="2 N^2 C + 5 N C^2 + 25 N C", kwargs="lepe_kernel_size=5",
                paper="RAVLT (arXiv:2411.07635)", module=RoPEGatedAttention)
def _rala_softmax(dim: int, num_heads: int, **kwargs: Any) -> nn.Module:
    return RoPEGatedAttention(dim, num_heads, **kwargs)


@register_mixer("agent", cost="4 N a C + 4 N C^2 + 9 N C", kwargs="agent_num=49, sr_ratio=1, train_grid=14",
                paper="Agent Attention (arXiv:2312.08874)", module=AgentAttention)
def _agent(dim: int, num_heads: int, train_grid: int | tuple[int, int] = 14, **kwargs: Any) -> nn.Module:
    return AgentAttention(dim, num_heads, train_grid=train_grid, **kwargs)


@register_mixer("swin", cost="2 N k^2 C + 4 N C^2", kwargs="window_size=7, shift_size=0",
                paper="Swin Transformer (arXiv:2103.14030)", module=ShiftedWindowAttention)
def _swin(dim: int, num_heads: int, **kwargs: Any) -> nn.Module:
    return ShiftedWindowAttention(dim, num_heads, **kwargs)
