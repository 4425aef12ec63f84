"""Per-model facts the contract suite checks against, kept apart from the code under test.

Every model registered by `backbones` must have an entry in PUBLISHED_PARAMS (the contract suite fails
otherwise), and its family must have a reduced-width configuration in SMALL_KWARGS.
"""

from __future__ import annotations

import re

# name -> (parameter count with the default head, source of the figure).
# FocalNet: microsoft/FocalNet README (28.4M / 28.6M / 49.9M / 50.3M / 88.1M / 88.7M, L 207M, XL 366M,
# H 687M / 689M with 1k heads); exact figures as timm 1.0.31 builds them with each name's default head
# (21842 classes for the 22k tags; none for huge_fl4), see shared/reference/davit_focalnet.md B.3.
PUBLISHED_PARAMS: dict[str, tuple[int, str]] = {
    # DaViT: dingmyu/davit README / model comments (T 28,360,168; S 49,745,896; B 87,954,408; L 196,811,752 for
    # large_window12_384). H and G: no official count; figures as timm 1.0.31 builds them (shared/reference A.3).
    # *_fl (Florence-2 towers): headless by default (num_classes=0, head norm kept), as timm 1.0.31 builds them.
    # BiFormer: rayleizhu/BiFormer README 13.1M / 25.5M / 56.8M; exact counts of the official classes
    # (shared/reference/biformer_litv2.md A.6).
    "biformer_tiny": (13_142_760, "BiFormer README 13.1M; official BiFormer-T 13,142,760"),
    "biformer_small": (25_536_232, "BiFormer README 25.5M; official BiFormer-S 25,536,232"),
    "biformer_base": (56_804_968, "BiFormer README 56.8M; official BiFormer-B 56,804,968"),
    "davit_tiny": (28_360_168, "dingmyu/davit: DaViT_tiny params 28,360,168"),
    "davit_small": (49_745_896, "dingmyu/davit: DaViT_small params 49,745,896"),
    "davit_base": (87_954_408, "dingmyu/davit: DaViT_base params 87,954,408"),
    "davit_large": (196_811_752, "dingmyu/davit: DaViT_large_window12_384 params 196,811,752"),
    "davit_huge": (348_922_856, "no official count; timm 1.0.31 davit_huge"),
    "davit_giant": (1_406_470_120, "no official count; timm 1.0.31 davit_giant"),
    "davit_base_fl": (90_370_048, "no official count; timm 1.0.31 davit_base_fl, num_classes=0"),
    "davit_huge_fl": (360_636_416, "no official count; timm 1.0.31 davit_huge_fl, num_classes=0"),
    "focalnet_tiny_srf": (28_427_116, "FocalNet README 28.4M; timm 1.0.31"),
    "focalnet_small_srf": (49_891_216, "FocalNet README 49.9M; timm 1.0.31"),
    "focalnet_base_srf": (88_148_144, "FocalNet README 88.1M; timm 1.0.31"),
    "focalnet_tiny_lrf": (28_647_928, "FocalNet README 28.6M; timm 1.0.31"),
    "focalnet_small_lrf": (50_342_440, "FocalNet README 50.3M; timm 1.0.31"),
    "focalnet_base_lrf": (88_749_768, "FocalNet README 88.7M; timm 1.0.31"),
    "focalnet_large_fl3": (239_134_898, "FocalNet README 207M (1k head); 21842-class head as timm's default"),
    "focalnet_large_fl4": (239_315_402, "FocalNet README 207M (1k head); 21842-class head as timm's default"),
    "focalnet_xlarge_fl3": (408_787_378, "FocalNet README 366M (1k head); 21842-class head as timm's default"),
    "focalnet_xlarge_fl4": (409_028_042, "FocalNet README 366M (1k head); 21842-class head as timm's default"),
    "focalnet_huge_fl3": (745_276_338, "FocalNet README 687M (1k head); 21842-class head as timm's default"),
    "focalnet_huge_fl4": (686_460_664, "FocalNet README 689M (1k head); headless as timm's default"),
    # EfficientViT-MSRA: Cream EfficientViT/classification README 2.3M/3.0M/4.2M/6.9M/8.8M/12.4M; exact counts
    # as the official class and timm 1.0.31 both build them (shared/reference/halonet_efficientvit.md B.2).
    "efficientvit_m0": (2_349_436, "Cream EfficientViT classification README M0 2.3M; official & timm 2,349,436"),
    "efficientvit_m1": (2_980_560, "Cream EfficientViT classification README M1 3.0M; official & timm 2,980,560"),
    "efficientvit_m2": (4_187_554, "Cream EfficientViT classification README M2 4.2M; official & timm 4,187,554"),
    "efficientvit_m3": (6_900_722, "Cream EfficientViT classification README M3 6.9M; official & timm 6,900,722"),
    "efficientvit_m4": (8_804_228, "Cream EfficientViT classification README M4 8.8M; official & timm 8,804,228"),
    "efficientvit_m5": (12_473_772, "Cream EfficientViT classification README M5 12.4M; official & timm 12,473,772"),
    # HaloNet H0-H7: the paper's table (arXiv:2103.12731; 5.50/8.10/9.40/11.84/19.10/30.72/43.46/67.43M, as
    # reproduced by keras_cv_attention_models, see shared/reference/halonet_efficientvit.md A.5). timm's hybrids:
    # exact counts of timm 1.0.31 (HF model cards 12.5M / 13.7M / 22.7M / 10.8M; halonet_h1 8.1M).
    "halonet_h0": (5_500_000, "HaloNet paper table H0 5.50M"),
    "halonet_h1": (8_100_000, "HaloNet paper table H1 8.10M; timm 1.0.31 8,100,056"),
    "halonet_h2": (9_400_000, "HaloNet paper table H2 9.40M"),
    "halonet_h3": (11_840_000, "HaloNet paper table H3 11.84M"),
    "halonet_h4": (19_100_000, "HaloNet paper table H4 19.10M"),
    "halonet_h5": (30_720_000, "HaloNet paper table H5 30.72M"),
    "halonet_h6": (43_460_000, "HaloNet paper table H6 43.46M"),
    "halonet_h7": (67_430_000, "HaloNet paper table H7 67.43M"),
    "halonet26t": (12_480_288, "timm 1.0.31 halonet26t (HF card 12.5M)"),
    "sehalonet33ts": (13_691_712, "timm 1.0.31 sehalonet33ts (HF card 13.7M)"),
    "halonet50ts": (22_733_280, "timm 1.0.31 halonet50ts (HF card 22.7M)"),
    "eca_halonext26ts": (10_756_885, "timm 1.0.31 eca_halonext26ts (HF card 10.8M)"),
    # LITv2: ziplab/LITv2 README 28M / 49M / 87M; exact counts of the official classes (torchvision DCN, same
    # parameters as the compiled op), shared/reference/biformer_litv2.md B.5.
    "litv2_small": (27_844_000, "ziplab/LITv2 README LITv2-S 28M; official class 27,844,000"),
    "litv2_medium": (48_830_368, "ziplab/LITv2 README LITv2-M 49M; official class 48,830,368"),
    "litv2_base": (86_520_704, "ziplab/LITv2 README LITv2-B 87M; official class 86,520,704"),
    # TransNeXt: DaiShiResearch/TransNeXt README 12.8M / 28.2M / 49.7M / 89.7M; exact counts of the official
    # classification classes with the 1000-class head (shared/reference/transnext.md section 8).
    "transnext_micro": (12_809_304, "TransNeXt README 12.8M; official transnext_micro 12,809,304"),
    "transnext_tiny": (28_258_960, "TransNeXt README 28.2M; official transnext_tiny 28,258,960"),
    "transnext_small": (49_741_564, "TransNeXt README 49.7M; official transnext_small 49,741,564"),
    "transnext_base": (89_721_496, "TransNeXt README 89.7M; official transnext_base 89,721,496"),
    # MoH-ViT (MoH on TransNeXt): SkyworkAI/MoH MoH-ViT README gives no parameter count; exact counts of the official
    # classes (MoH-ViT/transnext.py + attention.py + attention_native.py at the fetched snapshot, built on CPU with
    # timm 1.0.31, 1000-class head: TransNeXt-S / -B plus the bias-free wg / wg_0 / wg_1 routers).
    "moh_transnext_small_75": (49_910_548, "no README count; official moh_transnext_small_75 49,910,548"),
    "moh_transnext_small_80": (49_910_548, "no README count; official moh_transnext_small_80 49,910,548"),
    "moh_transnext_base_50": (90_023_512, "no README count; official moh_transnext_base_50 90,023,512"),
    "moh_transnext_base_75": (90_020_632, "no README count; official moh_transnext_base_75 90,020,632"),
    # RAVLT: qhfan/RALA README 15M / 26M / 48M / 95M; exact counts of the official classes (classfication/RALA.py at
    # a86314f, built from the fetched snapshot; the RoPE angle buffers are not parameters).
    "ravlt_t": (14_897_768, "qhfan/RALA README RAVLT-T 15M; official RAVLT_T 14,897,768"),
    "ravlt_s": (25_591_208, "qhfan/RALA README RAVLT-S 26M; official RAVLT_S 25,591,208"),
    "ravlt_b": (48_241_288, "qhfan/RALA README RAVLT-B 48M; official RAVLT_B 48,241,288"),
    "ravlt_l": (95_242_440, "qhfan/RALA README RAVLT-L 95M; official RAVLT_L 95,242,440"),
    # Agent-PVT / Agent-Swin: LeapLabTHU/Agent-Attention README 11.6M / 20.6M / 35.9M / 48.7M and 29M / 50M / 88M;
    # exact counts of the official classes (agent_transformer/models/agent_{pvt,swin}.py at 207ce3e, built from the
    # fetched snapshot on the meta device with the released configs agent_num 9-16-49-49, attn types AAAA / AAAB /
    # AABB / AAMB2).
    "agent_pvt_tiny": (11_570_352, "Agent-Attention README Agent-PVT-T 11.6M; official agent_pvt_tiny 11,570,352"),
    "agent_pvt_small": (20_635_066, "Agent-Attention README Agent-PVT-S 20.6M; official agent_pvt_small 20,635,066"),
    "agent_pvt_medium": (35_921_746, "Agent-Attention README Agent-PVT-M 35.9M; official agent_pvt_medium 35,921,746"),
    "agent_pvt_large": (48_738_180, "Agent-Attention README Agent-PVT-L 48.7M; official agent_pvt_large 48,738,180"),
    "agent_swin_tiny": (28_902_964, "Agent-Attention README Agent-Swin-T 29M; official 28,902,964"),
    "agent_swin_small": (49_666_684, "Agent-Attention README Agent-Swin-S 50M; official 49,666,684"),
    "agent_swin_base": (88_095_096, "Agent-Attention README Agent-Swin-B 88M; official 88,095,096"),
}



def _linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


# Parameters of each registry mixer at C channels and h heads, from the papers' layer lists (defaults of
# backbones.blocks.create_mixer): focal L=2 levels of 3x3 and 5x5; routed with a 5x5 LCE; halo block 8 + halo 3
# (window 14, two (2*14 - 1) x d tables) plus an output projection; static over a 7x7 window.
_MIXER_PARAMS = {
    "identity": lambda c, h: 0,
    "pool": lambda c, h: 0,
    "dwconv": lambda c, h: 49 * c + c,
    "global": lambda c, h: _linear(c, 3 * c) + _linear(c, c),
    "linear": lambda c, h: _linear(c, 3 * c) + _linear(c, c),
    "focal": lambda c, h: _linear(c, 2 * c + 3) + 2 * _linear(c, c) + (9 + 25) * c,
    "routed": lambda c, h: _linear(c, 3 * c) + 25 * c + c + _linear(c, c),
    "halo": lambda c, h: c * c + 2 * c * c + 2 * 27 * (c // h) + _linear(c, c),
    "static": lambda c, h: 2 * _linear(c, c) + 49 * h,
}


def hybrid_params(stage_mixers, dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), head_dim=32, mlp_ratio=4.0,
                  num_classes=1000) -> int:
    """HybridNet's parameter count from its description (docs/hybrids.md): conv stem (3x3/2 conv without bias, BN,
    3x3/2 conv, LN), per stage LN + 3x3/2 conv downsampling, blocks of LN + mixer + LN + ConvGLU, final LN + head.
    ``stage_mixers``: one entry per stage, a name or a '+'-cycle of names."""
    c0 = dims[0]
    n = 27 * (c0 // 2) + 2 * (c0 // 2) + 9 * (c0 // 2) * c0 + c0 + 2 * c0
    for i, (c, d, entry) in enumerate(zip(dims, depths, stage_mixers)):
        if i:
            n += 2 * dims[i - 1] + 9 * dims[i - 1] * c + c
        hidden = int(2 * int(c * mlp_ratio) / 3)  # ConvGLU at the budget of an MLP of mlp_ratio
        cycle = entry.split("+")
        for b in range(d):
            n += 4 * c + _linear(c, 2 * hidden) + 10 * hidden + _linear(hidden, c)
            n += _MIXER_PARAMS[cycle[b % len(cycle)]](c, c // head_dim)
    return n + 2 * dims[-1] + _linear(dims[-1], num_classes)


_HYBRID_SOURCE = "no published count (trained from scratch); analytic count, model_specs.hybrid_params"
PUBLISHED_PARAMS.update({
    "hybrid_tiny": (hybrid_params(("dwconv", "dwconv", "global", "global")), _HYBRID_SOURCE),
    "hybrid_tiny_global": (hybrid_params(("global",) * 4), _HYBRID_SOURCE),
    "hybrid_tiny_identity": (hybrid_params(("identity",) * 4), _HYBRID_SOURCE),
    "hybrid_tiny_pool": (hybrid_params(("pool",) * 4), _HYBRID_SOURCE),
    "hybrid_tiny_focal_routed": (hybrid_params(("focal", "focal", "routed", "routed")), _HYBRID_SOURCE),
    "hybrid_tiny_halo_global": (hybrid_params(("halo", "halo", "halo+global", "global")), _HYBRID_SOURCE),
    "hybrid_tiny_static_global": (hybrid_params(("static", "static", "static+global", "static+global")),
                                  _HYBRID_SOURCE),
    "hybrid_tiny_linear_global": (hybrid_params(("linear", "linear", "global", "global")), _HYBRID_SOURCE),
})

# family regex -> kwargs that shrink a model of that family to seconds on CPU while keeping its structure.
SMALL_KWARGS: dict[str, dict] = {
    # BiFormer: routing stages with 2/4/6 heads of 8 channels (topk 1, 4, 16 of 7 x 7 regions), 8-head global stage.
    r"biformer_.*": dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), head_dim=8),
    r"davit_.*": dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), depths=(1, 1, 2, 1)),
    r"focalnet_.*": dict(embed_dim=16, depths=(1, 1, 2, 1)),
    # zero_init_last=False: the official zero-gamma init of the last BN of every branch would stop all gradients
    # upstream of it at init, which the gradient check cannot tell from a dead parameter.
    r"efficientvit_m\d": dict(
        embed_dim=(16, 24, 32), depth=(1, 1, 1), num_heads=(2, 2, 2), key_dim=(4, 4, 4), zero_init_last=False
    ),
    # HaloNet (zero_init_last=False as above): one block per stage, a strided halo block in the last stage.
    r"halonet_h\d": dict(
        stem_chs=16, widths=(16, 32, 32, 64), layouts=("A", "A", "A", "A"), num_heads=2, zero_init_last=False
    ),
    r"halonet26t|sehalonet33ts|halonet50ts|eca_halonext26ts": dict(
        stem_chs=16, widths=(64, 64, 128, 128), layouts=("B", "BA", "BA", "A"), num_heads=2, zero_init_last=False
    ),
    # LITv2: two ConvFFN stages, HiLo with 1 Hi-Fi + 3 Lo-Fi heads in stage 3 and 8 global heads in stage 4.
    r"litv2_.*": dict(embed_dim=16, depths=(1, 1, 2, 1), head_dim=16),
    # TransNeXt: heads of 24 channels as in every variant; aggregated attention in stages 1-3, full in stage 4.
    r"transnext_.*": dict(embed_dims=(24, 48, 72, 96), depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 4)),
    # MoH-TransNeXt: heads of 8-16 channels; every gate form (shared S, top-k): all-shared softmax (2, 0), one shared
    # head (1, 2 of 3), routed only (0, 2 of 3), every routed head on (2, 2 of 2). (Top-1 routing would leave the
    # router without a task-loss gradient: a renormalised single gate is 1; only the balancing loss trains it.)
    r"moh_transnext_.*": dict(
        embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), num_heads=(2, 4, 3, 4),
        moh=tuple(dict(shared_heads=s, routed_heads=k) for s, k in ((2, 0), (1, 2), (0, 2), (2, 2))),
    ),
    # RAVLT: heads of 16 channels (a multiple of 4 for the 2-D RoPE), linear stages 1-2, softmax stages 3-4.
    r"ravlt_.*": dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), num_heads=(1, 2, 3, 4), head_hidden_size=96),
    # Agent-PVT: heads of 8 channels (16 / 2, ...), the released agent counts and 224 grids.
    r"agent_pvt_.*": dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), num_heads=(2, 4, 6, 8)),
    # Agent-Swin: heads of 8 channels; agent blocks then (shifted) window blocks in stage 3, windows in stage 4.
    r"agent_swin_.*": dict(embed_dim=16, depths=(1, 1, 3, 2), num_heads=(2, 4, 8, 16), agent_depths=(1, 1, 1, 0)),
    # HybridNet: heads of 8 channels; two blocks in stage 3 so that interleaved layouts keep both mixers.
    r"hybrid_.*": dict(embed_dims=(16, 32, 48, 64), depths=(1, 1, 2, 1), head_dim=8),
}

# Name regexes of models that cannot serve dense prediction (no odd-size check). Every family here can.
CLASSIFICATION_ONLY: tuple[str, ...] = ()


def small_kwargs(name: str) -> dict:
    for pattern, kwargs in SMALL_KWARGS.items():
        if re.fullmatch(pattern, name):
            return dict(kwargs)
    raise KeyError(f"no reduced-width configuration for {name!r} in tests/model_specs.py SMALL_KWARGS")
