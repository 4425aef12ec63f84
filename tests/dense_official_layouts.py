"""Official detector / segmentor state-dict layouts, written from the official code's key names (independently of
backbones.mm.checkpoint): used by tests/mm to build checkpoints "as the official files are" from a model built here.
"""

import re

import torch


def focalnet_official(key: str, value: torch.Tensor):
    """microsoft/FocalNet (and detrex's copy): patch_embed, downsample at the end of a stage, Linear f / proj /
    fc, LayerScale gamma_1 / gamma_2, post-norm norm1 / norm2; detection per-output norms norm{i} as they are."""
    key = re.sub(r"^stem\.", "patch_embed.", key)
    key = re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.", key)
    key = re.sub(r"\.ls([12])\.gamma$", r".gamma_\1", key)
    key = re.sub(r"\.norm([12])_post\.", r".norm\1.", key)
    if re.search(r"(modulation\.(f|proj)|mlp\.fc[12])\.weight$", key):
        value = value[:, :, 0, 0]
    return key, value


def transnext_official(key: str, value: torch.Tensor):
    """DaiShiResearch/TransNeXt: patch_embed{s}, block{s}.{j}, norm{s}, attn.sr / attn.norm, mlp.dwconv.dwconv."""
    key = re.sub(r"^stages\.(\d)\.downsample\.", lambda m: f"patch_embed{int(m[1]) + 1}.", key)
    key = re.sub(r"^stages\.(\d)\.blocks\.", lambda m: f"block{int(m[1]) + 1}.", key)
    key = re.sub(r"^stages\.(\d)\.norm\.", lambda m: f"norm{int(m[1]) + 1}.", key)
    key = key.replace("attn.pool_proj.", "attn.sr.").replace("attn.pool_norm.", "attn.norm.")
    key = key.replace("mlp.dwconv.", "mlp.dwconv.dwconv.")
    return key, value


def with_official_backbone(rename):
    def to_official(sd):
        out = {}
        for k, v in sd.items():
            if k.startswith("backbone.model."):
                k, v = rename(k[len("backbone.model."):], v)
                k = f"backbone.{k}"
            out[k] = v  # necks / heads: mmdet 2.x / mmseg 0.x names are the 3.x / 1.x ones
        return out

    return to_official


def mmdet_dino_to_detrex(sd):
    """mmdet DINO names -> detrex projects/dino names (DINO / DINOTransformer / BaseTransformerLayer / FFN / MLP /
    ChannelMapper of ConvNormAct), the class / box branches also registered under transformer.decoder.*"""
    out = {}
    for k, v in sd.items():
        if k.startswith("backbone.model."):
            name, v = focalnet_official(k[len("backbone.model."):], v)
            out[f"backbone.{name}"] = v
            continue
        if k.startswith("backbone."):  # per-output norms norm{i}
            out[k] = v
            continue
        k = re.sub(r"^encoder\.layers\.(\d+)\.self_attn\.", r"transformer.encoder.layers.\1.attentions.0.", k)
        k = re.sub(r"^encoder\.layers\.(\d+)\.ffn\.", r"transformer.encoder.layers.\1.ffns.0.", k)
        k = re.sub(r"^(encoder|decoder)\.layers\.(\d+)\.norms\.", r"transformer.\1.layers.\2.norms.", k)
        k = re.sub(r"^decoder\.layers\.(\d+)\.self_attn\.", r"transformer.decoder.layers.\1.attentions.0.", k)
        k = re.sub(r"^decoder\.layers\.(\d+)\.cross_attn\.", r"transformer.decoder.layers.\1.attentions.1.", k)
        k = re.sub(r"^decoder\.layers\.(\d+)\.ffn\.", r"transformer.decoder.layers.\1.ffns.0.", k)
        k = re.sub(r"^decoder\.(ref_point_head|norm)\.", r"transformer.decoder.\1.", k)
        k = {"level_embed": "transformer.level_embeds"}.get(k, k)
        k = re.sub(r"^memory_trans_fc\.", "transformer.enc_output.", k)
        k = re.sub(r"^memory_trans_norm\.", "transformer.enc_output_norm.", k)
        k = re.sub(r"^query_embedding\.", "transformer.tgt_embed.", k)
        k = re.sub(r"^dn_query_generator\.label_embedding\.", "label_enc.", k)
        k = re.sub(r"^neck\.(convs|extra_convs)\.(\d+)\.gn\.", r"neck.\1.\2.norm.", k)
        if m := re.match(r"^bbox_head\.cls_branches\.(\d+)\.(.+)", k):
            k = f"class_embed.{m[1]}.{m[2]}"
            out[f"transformer.decoder.{k}"] = v
        elif m := re.match(r"^bbox_head\.reg_branches\.(\d+)\.(\d)\.(.+)", k):
            k = f"bbox_embed.{m[1]}.layers.{int(m[2]) // 2}.{m[3]}"
            out[f"transformer.decoder.{k}"] = v
        out[k] = v
    assert not any(k.startswith(("encoder.", "decoder.", "bbox_head.")) for k in out)
    return out


def davit_official(key: str, value: torch.Tensor):
    """dingmyu/davit: patch_embeds.{s}.{proj,norm} (stem and downsamples), main_blocks.{s}.{j}.{0,1}, cpe.{0,1}."""
    key = key.replace("stem.conv.", "patch_embeds.0.proj.").replace("stem.norm.", "patch_embeds.0.norm.")
    key = re.sub(r"^stages\.(\d)\.downsample\.conv\.", r"patch_embeds.\1.proj.", key)
    key = re.sub(r"^stages\.(\d)\.downsample\.norm\.", r"patch_embeds.\1.norm.", key)
    key = re.sub(r"^stages\.(\d)\.blocks\.", r"main_blocks.\1.", key)
    return key.replace(".cpe1.", ".cpe.0.").replace(".cpe2.", ".cpe.1."), value


def litv2_official(key: str, value: torch.Tensor):
    """ziplab/LITv2: patch_embed, token merging closing stage i (layers.i.downsample.{dconv,norm_layer}),
    attn.h_* / attn.l_*, mlp.dwconv.dwconv, norm2 for the single norm of an attention-free block."""
    key = re.sub(r"^stem\.", "patch_embed.", key)
    key = re.sub(r"^stages\.(\d)\.downsample\.conv\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.dconv.", key)
    key = re.sub(r"^stages\.(\d)\.downsample\.norm\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.norm_layer.", key)
    key = re.sub(r"^stages\.(\d)\.blocks\.(\d+)\.norm\.", r"layers.\1.blocks.\2.norm2.", key)
    key = re.sub(r"^stages\.(\d)\.blocks\.", r"layers.\1.blocks.", key)
    key = key.replace(".attn.hifi_", ".attn.h_").replace(".attn.lofi_", ".attn.l_")
    return key.replace(".mlp.dwconv.", ".mlp.dwconv.dwconv."), value


def efficientvit_official(key: str, value: torch.Tensor):
    """microsoft/Cream EfficientViT: patch_embed.{0,2,4,6}, blocks1..3 with each subsample as entries 0..2,
    Conv2d_BN's conv named c (the per-block attention_bias_idxs buffers are left out: derived, dropped on load)."""
    key = re.sub(r"^patch_embed\.conv(\d)\.", lambda m: f"patch_embed.{2 * (int(m[1]) - 1)}.", key)
    key = re.sub(r"\.conv\.weight$", ".c.weight", key)
    if m := re.match(r"^stages\.(\d)\.(downsample\.(?:res1|patchmerge|res2)|blocks\.(\d+))\.(.*)$", key):
        stage, part, j, rest = int(m[1]), m[2], m[3], m[4]
        pos = {"downsample.res1": 0, "downsample.patchmerge": 1, "downsample.res2": 2}.get(part)
        pos = pos if pos is not None else int(j) + (3 if stage > 0 else 0)
        key = f"blocks{stage + 1}.{pos}.{rest}"
    return key, value


def ravlt_official(key: str, value: torch.Tensor):
    """qhfan/RALA dense GLTA (detection / segmentation RALA.py): patch_embed.proj Sequential (conv, BN, GELU) x 3 +
    (conv, BN) at indices 0/1, 3/4, 6/7, 9/10; layers.i.{blocks, downsample.{reduction, norm} closing stage i};
    blocks pos / norm{1,2}.norm (LayerNorm2d) / attn.{qkvo, lepe, proj} / ffn.{fc1, dwconv, fc2} with 1x1 convs,
    gamma_1 / gamma_2 of shape (1, C, 1, 1); no conv head, no classifier."""
    if m := re.match(r"^stem\.(conv|norm)(\d)\.(.+)$", key):
        key = f"patch_embed.proj.{3 * (int(m[2]) - 1) + (m[1] == 'norm')}.{m[3]}"
        return key, value
    key = re.sub(r"^stages\.(\d)\.downsample\.conv\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.reduction.", key)
    key = re.sub(r"^stages\.(\d)\.downsample\.norm\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.norm.", key)
    key = re.sub(r"^stages\.(\d)\.blocks\.", r"layers.\1.blocks.", key)
    key = key.replace(".pos_embed.", ".pos.").replace(".mlp.", ".ffn.")
    key = re.sub(r"\.norm([12])\.(weight|bias)$", r".norm\1.norm.\2", key)
    if m := re.search(r"\.ls([12])\.gamma$", key):
        return key[: m.start()] + f".gamma_{m[1]}", value.reshape(1, -1, 1, 1)
    if re.search(r"\.(attn\.qkvo|attn\.proj|ffn\.fc1|ffn\.fc2)\.weight$", key):
        value = value[:, :, None, None]
    return key, value


def ravlt_dense_official(model):
    """The whole-detector / segmentor dict of an official RAVLT dense file: the backbone as ravlt_official, the
    output LayerNorms as extra_norms.{i}.norm (LayerNorm2d, built for all four stages whatever the neck reads), and
    the per-stage RoPE.angle buffers (head_dim / 2 frequencies) the official layers register."""
    stages = model.backbone.model.stages
    widths = [s.blocks[0].norm1.normalized_shape[0] for s in stages]
    head_dims = [c // s.blocks[0].attn.num_heads for c, s in zip(widths, stages)]

    def to_official(sd):
        out = {}
        for k, v in sd.items():
            if k.startswith("backbone.model."):
                k, v = ravlt_official(k[len("backbone.model."):], v)
                k = f"backbone.{k}"
            elif m := re.match(r"^backbone\.norm(\d)\.(weight|bias)$", k):
                k = f"backbone.extra_norms.{m[1]}.norm.{m[2]}"
            out[k] = v
        for i, (c, d) in enumerate(zip(widths, head_dims)):
            out[f"backbone.layers.{i}.RoPE.angle"] = torch.rand(d // 2)
            out.setdefault(f"backbone.extra_norms.{i}.norm.weight", torch.ones(c))
            out.setdefault(f"backbone.extra_norms.{i}.norm.bias", torch.zeros(c))
        return out

    return to_official


def agent_pvt_official(key: str, value: torch.Tensor):
    """LeapLabTHU/Agent-Attention dense AgentPVT (downstream/{detection,segmentation} agent_pvt.py): patch_embed{s},
    pos_embed{s}, block{s}.{j} as the classifier, no head, no output norms. The agent biases keep the classifier's
    shapes (agent_num 9 / 16 / 49 / 49 of a 224 input): an_bias / na_bias (heads, agent_num, 7, 7), ah_bias
    (1, heads, agent_num, 224 / stride, 1), ...; the downstream agent grids only set the pooling."""
    key = re.sub(r"^stages\.(\d)\.downsample\.", lambda m: f"patch_embed{int(m[1]) + 1}.", key)
    key = re.sub(r"^stages\.(\d)\.pos_embed$", lambda m: f"pos_embed{int(m[1]) + 1}", key)
    key = re.sub(r"^stages\.(\d)\.blocks\.(\d+)\.", lambda m: f"block{int(m[1]) + 1}.{m[2]}.", key)
    if m := re.match(r"^block(\d)\.\d+\.attn\.(an|na|ah|aw|ha|wa)_bias$", key):
        _check_official_agent_bias(key, m[2], int(m[1]) - 1, value)
    return key, value


def _check_official_agent_bias(key: str, kind: str, stage: int, value: torch.Tensor) -> None:
    """Official dense agent biases (PVT and Swin): the classifier's agent counts 9 / 16 / 49 / 49 and the 224 input's
    stage grids 56 / 28 / 14 / 7, whatever downstream agent grid the config pools to."""
    agents, side = (9, 16, 49, 49)[stage], 56 >> stage
    heads = value.shape[1] if kind in ("ah", "aw", "ha", "wa") else value.shape[0]
    official = {"an": (heads, agents, 7, 7), "na": (heads, agents, 7, 7), "ah": (1, heads, agents, side, 1),
                "aw": (1, heads, agents, 1, side), "ha": (1, heads, side, 1, agents),
                "wa": (1, heads, 1, side, agents)}[kind]
    assert tuple(value.shape) == official, (key, tuple(value.shape), official)


def agent_swin_dense_official(sd):
    """LeapLabTHU/Agent-Attention dense AgentSwinTransformer (downstream/{detection,segmentation} agent_swin.py):
    patch_embed, layers.i.{blocks, downsample closing stage i}, per-output LayerNorms norm{i} at the backbone's top
    level (no final norm, no head); agent blocks with one fused attn.qkv (q rows first), Swin blocks with their
    persistent relative_position_index buffers (no attn_mask buffers: the dense copy builds the masks per input)."""
    out = {}
    for ours, v in sd.items():
        if not ours.startswith("backbone.model."):
            out[ours] = v  # necks / heads, and the output norms norm{i} (the same names)
            continue
        if ".attn.kv." in ours:
            continue  # joined with q below
        k = ours[len("backbone.model."):]
        k = re.sub(r"^stem\.", "patch_embed.", k)
        k = re.sub(r"^stages\.(\d)\.downsample\.", lambda m: f"layers.{int(m[1]) - 1}.downsample.", k)
        k = re.sub(r"^stages\.(\d)\.blocks\.", r"layers.\1.blocks.", k)
        if ".attn.q." in k:
            v = torch.cat([v, sd[ours.replace(".attn.q.", ".attn.kv.")]])
            k = k.replace(".attn.q.", ".attn.qkv.")
        if m := re.match(r"^layers\.(\d)\.blocks\.\d+\.attn\.(an|na|ah|aw|ha|wa)_bias$", k):
            _check_official_agent_bias(k, m[2], int(m[1]), v)
        if k.endswith(".attn.relative_position_bias_table"):
            w = (int(round(v.shape[0] ** 0.5)) + 1) // 2  # (2w - 1)^2 entries
            out[f"backbone.{k[: -len('_bias_table')]}_index"] = torch.randint(0, v.shape[0], (w * w, w * w))
        out[f"backbone.{k}"] = v
    return out
