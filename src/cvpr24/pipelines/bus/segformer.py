"""The full profile's network: a Mix Transformer (MiT-B5) encoder with a SegFormer all-MLP head.

Parameter names follow the ImageNet `mit_b5.pth` checkpoint released with SegFormer (patch_embed{1-4},
block{1-4}.<i>.{norm1,attn.{q,kv,proj,sr,norm},norm2,mlp.{fc1,dwconv.dwconv,fc2}}, norm{1-4}), so the user's
file loads into the encoder with `core.safety.load_weights` (`weights_only=True`). The head is SegFormer's (DAFormer's
context-aware fusion head is not reproduced). `forward` returns (logits at 1/4, fused 1/4 feature), like
`model.SegNet`, so the training code is the same for both.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cvpr24.pipelines.bus.labels import NUM_CLASSES


class OverlapPatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int, patch: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, patch, stride, patch // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a sequence shrunk by `sr` (spatial reduction)."""

    def __init__(self, dim: int, heads: int, sr: int):
        super().__init__()
        self.heads, self.sr_ratio = heads, sr
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        if sr > 1:
            self.sr = nn.Conv2d(dim, dim, sr, sr)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, h, w):
        B, N, C = x.shape
        q = self.q(x).view(B, N, self.heads, C // self.heads).transpose(1, 2)
        if self.sr_ratio > 1:
            x = self.norm(self.sr(x.transpose(1, 2).reshape(B, C, h, w)).flatten(2).transpose(1, 2))
        k, v = self.kv(x).view(B, -1, 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class DWConv(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x, h, w):
        B, N, C = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(B, C, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x, h, w):
        return self.fc2(F.gelu(self.dwconv(self.fc1(x), h, w)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, sr: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientAttention(dim, heads, sr)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x, h, w):
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x), h, w)


class MixTransformer(nn.Module):
    def __init__(self, dims=(64, 128, 320, 512), depths=(3, 6, 40, 3), heads=(1, 2, 5, 8), srs=(8, 4, 2, 1)):
        super().__init__()
        self.dims = dims
        cin = 3
        for i in range(4):
            patch, stride = (7, 4) if i == 0 else (3, 2)
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(cin, dims[i], patch, stride))
            setattr(self, f"block{i + 1}", nn.ModuleList(Block(dims[i], heads[i], srs[i]) for _ in range(depths[i])))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dims[i]))
            cin = dims[i]

    def forward(self, x):
        feats = []
        for i in range(4):
            x, h, w = getattr(self, f"patch_embed{i + 1}")(x)
            for blk in getattr(self, f"block{i + 1}"):
                x = blk(x, h, w)
            x = getattr(self, f"norm{i + 1}")(x)
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
            feats.append(x)
        return feats


class SegFormer(nn.Module):
    def __init__(self, encoder: MixTransformer, embed: int = 768, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.encoder = encoder
        self.decode_proj = nn.ModuleList(nn.Conv2d(d, embed, 1) for d in encoder.dims)
        self.decode_fuse = nn.Sequential(nn.Conv2d(4 * embed, embed, 1, bias=False), nn.BatchNorm2d(embed), nn.ReLU())
        self.dropout = nn.Dropout2d(0.1)
        self.classifier = nn.Conv2d(embed, num_classes, 1)

    def forward(self, x):
        feats = self.encoder(x)
        size = feats[0].shape[-2:]
        ups = [F.interpolate(p(f), size=size, mode="bilinear", align_corners=False)
               for p, f in zip(self.decode_proj, feats, strict=True)]
        fused = self.decode_fuse(torch.cat(ups, 1))
        return self.classifier(self.dropout(fused)), fused


def segformer_mit_b5(pretrained: str | Path | None) -> SegFormer:
    """MiT-B5 + SegFormer head; the encoder's ImageNet weights come from the user's `pretrained` file."""
    from cvpr24.pipelines.bus.model import load_user_weights

    encoder = MixTransformer()
    state = load_user_weights(pretrained, "MiT-B5 (ImageNet)",
                              "download mit_b5.pth from the SegFormer release (NVlabs/SegFormer, 'imagenet "
                              "pretrained weights') and put it at pretrained/mit_b5.pth")
    state = {k: v for k, v in state.items() if not k.startswith("head.")}  # the ImageNet classifier
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"{pretrained} does not look like MiT-B5 weights: {len(missing)} encoder tensors missing "
                         f"(e.g. {missing[:3]})")
    return SegFormer(encoder)
