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
