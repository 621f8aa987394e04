"""MagNet (Mask Grounding for Referring Image Segmentation, CVPR 2024): the network, written from scratch.

One code path for every size: `MagNetConfig(vocab_size=...)` defaults give the embedded tiny model (spec 8.2); a full-size
model is the same classes with bigger numbers. Read top to bottom:

1. `MagNetConfig` (validated in `__post_init__`) and the special token ids (`PAD_ID` ... `UNK_ID`).
2. Building blocks: `LayerNorm2d`, `sine_position_encoding`, a plain multi-head attention, a post-norm
   transformer layer.
3. Encoders: `ImageEncoder` (4-stage conv net, strides 4/8/16/32), `TextEncoder` (BERT-like, split in 4
   stages), and the cross-modal pieces `PWAM` + `Gate` (vision <- language, spec 2.2), `CAM` (pyramid of
   pooled PWAMs, spec 2.2) and `LanguagePWAM` (language <- vision, spec 2.3), run jointly by `FusionEncoder`.
4. Mask2Former-style head: `FPNPixelDecoder` or `MSDeformPixelDecoder` (pure-PyTorch `ms_deform_attn_core`),
   then `MaskDecoder` (masked attention, ONE learnable query, deep supervision).
5. Mask Grounding (training only): `mask_tokens`, `MaskEncoder`, `MaskedTokenPredictor`, `LMHead`, `MGHead`,
   `mg_loss`.
6. Losses and inference: `downsample_mask`, `segmentation_loss`, `cal_loss`, `mask_probability`, and the
   `MagNet` module (`forward`, `predict`, `mg_logits`, `sentence_features`, `pixel_features`, `losses`).

Provenance of every reconstructed choice (spec markers [code] = read in yxchng/mask-grounding @ 2debc7e,
[recalled] = the spec's recollection of the paper, not verified, [design] = ours):

- [code] PWAM (vision side): pixels query words, q = LN(Linear(x)), k/v = Linear(l)*mask, additive
  (1e4*mask - 1e4) on the logits, scale key_channels**-0.5 of the FULL width even with several heads,
  mm = GELU(W(vis * LN(Linear(A v)))). Gate: tanh(W2 act(W1 mm)) * mm, W1/W2 bias-free.
- [code] language-side PWAM: words query pixels, k/v/out InstanceNorm (no affine), scale lang_dim**-0.5,
  ReLU gate, and it sees the visual tokens BEFORE the vision-side gated update.
- [code] CAM: pooled pyramid (1,2,3,6) -> Conv(C,4C)-LN2d(eps 1e-6)-Conv(4C,C)-GELU-Conv(C,C/4) (bias-free)
  -> PWAM at C/4 -> bilinear align_corners=True upsample; mixer Linear(2C,C)-LN-Linear(C,C)-GELU.
- [code] head: pixel-decoder outputs at 1/32, 1/16, 1/8 feed the masked-attention decoder round-robin from the
  coarsest; post-norm; cross-attn -> self-attn -> FFN; 1 query; class head 2-way; MLP mask embed (3 layers);
  predictions after the learnable query and after each layer; attention mask = sigmoid(mask) < 0.5 at the
  next level's size (bilinear, align_corners=False), fully masked rows unmasked.
- [code] `msdeform` pixel decoder: all four stage outputs are deformable-encoder levels (as the released cfg,
  DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES = s1..s4), so there are NO extra FPN levels: mask features =
  Conv1x1 of the encoder's 1/4 level; multi-scale maps = the encoder's 1/32, 1/16, 1/8 levels.
- [code + corrections] inference: prob = sigmoid(bilinear align_corners=True upsample of the LAST layer's mask
  logits); the released eval's class score is softmax over the query axis (= 1), so the class head never
  matters; `use_class_score=True` gives softmax(cls)[..., 1] * sigmoid(mask). Thresholding (> 0.5) is the
  caller's job.
- [code] `lang_fusion_mask_mode="released"` reproduces the released call, which passes BERT's additive mask
  (0 valid / -10000 padding) where a 0/1 mask is expected: valid queries become 0 (uniform attention over
  pixels), padding queries are scaled by -10000, and the output InstanceNorm runs over all N tokens.
  "intended" (default, [design]): the 0/1 mask zeroes padding queries, the output InstanceNorm runs over the
  VALID tokens only, and padding rows of the language update are 0.
- [design] gate initialisation: the spec asks for an exactly-zero update at init. The released constructors
  zero BOTH gate matrices; with both zero no gradient can ever reach them (d/dW2 = act(W1 mm) = act(0) = 0 and
  d/dW1 is proportional to W2 = 0), so the gate would stay shut forever. In the released code the vision-side
  gates are in fact re-initialised by Swin's `init_weights` (trunc_normal std 0.02 on every Linear) and the
  language-side gates stay both zero. `gate_init`: "w2_zero" (default: W1 default init, W2 = 0 -> exact zero
  update at init and trainable), "normal" (both trunc_normal std 0.02, the vision side's effective released
  init), "both_zero" (literal constructor; a dead gate).
- [design] image encoder: ConvNeXt-style residual blocks (depthwise kxk conv, channels-first LayerNorm,
  1x1 4x expansion, GELU, 1x1), patchify stem conv 4x4/4 + LN2d, LN2d + 2x2/2 conv between stages; no
  BatchNorm, so train == eval behaviour. Swin-B in the paper.
- [design] text encoder: learned word + position embeddings, LN, post-norm GELU transformer layers (BERT
  layout) split in 4 stages; from scratch (BERT-base in the paper).
- [recalled + design] stage output without CAM: y_s = LayerNorm(mm), as LAVT normalises each stage output.
- [design] `fpn` pixel decoder: Mask2Former's plain FPN (top 3x3 conv + GN + ReLU on the 1/32 map; lateral
  1x1 + GN and output 3x3 + GN + ReLU at 1/16, 1/8, 1/4, bilinear upsampling), mask features = 1x1 conv of
  the 1/4 map.
- [design] CAM pyramid sizes are capped at the feature size at run time (min(p, H, W)).
- [design] segmentation loss: single-query Mask2Former loss summed over the dec_layers + 1 predictions:
  w_class * CE(class, index 1 = target) + w_bce * BCE + w_dice * Dice (+1 smoothing) on the 1/4 logits; the GT
  is area-pooled to the logits' grid and binarised at > 0.5 (`downsample_mask`).
- [issue + design] token masking (OVR-CNN style MLM): non-special, non-padding tokens selected w.p.
  mg_mask_prob; selected -> [MASK] w.p. mg_mask_replace, a random non-special word w.p. mg_noise_prob, else
  unchanged; one forced selection per sentence when none (mg_force_one). [UNK] counts as special.
- [recalled + design] MG branch: masked ids go through the same image-fused encoder and pixel decoder as the
  main branch (`mg_text_pass="fused"`; "text" takes T_m from the language encoder alone). The visual tokens V
  are the mask features of that MASKED pass pooled to mg_pool x mg_pool (`mg_visual="masked"`), because the
  main pass's features are fused with the unmasked sentence and could leak the hidden word; "main" uses the
  main pass's features (cheaper, leaky). In `losses` the main and the masked pass run as one batch of 2B
  (every op is per-sample). Mask tokens: GT area-pooled to mg_pool x mg_pool, MLP 1->d->d (ReLU) + 2-D sine
  PE. MTP: single-stream post-norm transformer over [lang_proj(T_m)+type0, vis_proj(V)+PE+type1, M+type2],
  padding text keys masked. The SAME sine PE is added to the visual tokens: V and M are separate tokens, so
  without a shared position code the MTP cannot tell which visual token lies under which mask token; and
  reading "the content under the mask" takes two attention hops (mtp_layers >= 2). LM head: dense+GELU+LN
  then decoder to the vocabulary, tied to the word embedding when mtp_dim == text_dim. L_MG = CE over the
  selected tokens, mean over the batch's selected tokens.
- [code] the last stage's gated visual update is computed but never used (as in the released forward), so the
  stage-4 vision gate receives no gradient; the stage-4 language update only feeds MG / CAL.
- [recalled + design] CAL: P2T + P2P InfoNCE (spec 2.5), tau 0.07, on L2-normalised mask features at 1/4 and
  the L2-normalised lang_proj of the masked mean of the fused language tokens; <= cal_samples fg and bg pixels
  per image (sub-sampled with the caller's generator); images without fg or bg are skipped.
- [design] `lang_proj` (Linear text_dim -> mask_dim) exists only when MG or CAL is on; MG modules live in
  `mg_head`, built only when `mg` is on and AFTER every inference module, so the same seed gives the same
  inference weights with MG on or off, and `predict` never touches `mg_head` / `lang_proj`
  (`inference_parameters`, `inference_state_dict`).
- [design] lambda_mg = lambda_cal = 1, w_class/w_bce/w_dice = 2/5/5 (Mask2Former's), tau 0.07, MTP depth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD_ID, CLS_ID, SEP_ID, MASK_ID, UNK_ID = 0, 1, 2, 3, 4
IGNORE_INDEX = -100

_CHOICES = {
    "lang_fusion_mask_mode": ("intended", "released"),
    "pixel_decoder": ("fpn", "msdeform"),
    "mg_text_pass": ("fused", "text"),
    "mg_visual": ("masked", "main"),
    "gate_init": ("w2_zero", "normal", "both_zero"),
    "encoder": ("convnext", "resnet"),
}


# ============================================================================================ config


@dataclass
class MagNetConfig:
    """Every knob of the model and its losses; the defaults are the embedded tiny model (spec 8.2).

    Sequences may be given as lists (YAML) and are stored as tuples.
    """

    vocab_size: int
    max_tokens: int = 12
    image_size: int = 64
    # image encoder: 4 stages, strides 4/8/16/32
    encoder: str = "convnext"      # convnext (patchify stem, depthwise blocks) | resnet (conv stem, basic blocks)
    dims: tuple[int, ...] = (24, 48, 96, 192)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    conv_kernel: int = 3
    stem_width: int = 32           # resnet: width of the first (stride-2) stem convolution
    # text encoder: 4 stages of transformer layers
    text_dim: int = 64
    text_heads: int = 4
    text_ffn: int = 256
    text_layers: tuple[int, ...] = (1, 1, 1, 1)
    # fusion
    fusion_heads: int = 1
    gate_init: str = "w2_zero"
    lang_fusion: bool = True
    lang_fusion_mask_mode: str = "intended"
    cam: bool = False
    cam_sizes: tuple[tuple[int, ...], ...] = ((1, 2, 3, 6), (1, 2, 3, 6), (1, 2), (1, 2))
    # head
    pixel_decoder: str = "fpn"
    pixel_dec_layers: int = 1
    pixel_dec_heads: int = 4
    pixel_dec_ffn: int = 128
    deform_points: int = 4
    mask_dim: int = 64
    dec_layers: int = 2
    dec_heads: int = 4
    dec_ffn: int = 128
    use_class_score: bool = False
    # mask grounding (training only)
    mg: bool = False
    mg_pool: int = 8
    mtp_layers: int = 1
    mtp_dim: int = 64
    mtp_heads: int = 4
    mtp_ffn: int = 128
    mg_mask_prob: float = 0.15
    mg_mask_replace: float = 0.9
    mg_noise_prob: float = 0.0
    mg_force_one: bool = True
    mg_text_pass: str = "fused"
    mg_visual: str = "masked"
    mg_mask_pe: bool = True
    # cross-modal alignment loss
    cal: bool = False
    cal_tau: float = 0.07
    cal_samples: int = 512
    # loss weights
    lambda_mg: float = 1.0
    lambda_cal: float = 1.0
    w_class: float = 2.0
    w_bce: float = 5.0
    w_dice: float = 5.0
    # special token ids
    pad_id: int = PAD_ID
    cls_id: int = CLS_ID
    sep_id: int = SEP_ID
    mask_id: int = MASK_ID
    unk_id: int = UNK_ID

    def __post_init__(self) -> None:
        for name in ("dims", "blocks", "text_layers"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        self.cam_sizes = tuple(tuple(int(p) for p in s) for s in self.cam_sizes)

        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"MagNetConfig.{field}: {why} (got {getattr(self, field)!r})")

        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise bad(name, f"must be one of {allowed}")
        for name in ("dims", "blocks", "text_layers", "cam_sizes"):
            if len(getattr(self, name)) != 4:
                raise bad(name, "needs exactly 4 entries (one per stage)")
        if any(d < 4 for d in self.dims):
            raise bad("dims", "every stage needs >= 4 channels")
        if any(b < 0 for b in self.blocks) or any(n < 0 for n in self.text_layers):
            raise bad("blocks" if any(b < 0 for b in self.blocks) else "text_layers", "counts must be >= 0")
        if any(len(s) == 0 or any(p < 1 for p in s) for s in self.cam_sizes):
            raise bad("cam_sizes", "each stage needs >= 1 pyramid size, all >= 1")
        positive = ("vocab_size", "max_tokens", "image_size", "conv_kernel", "stem_width", "text_dim", "text_heads", "text_ffn",
                    "fusion_heads", "pixel_dec_heads", "pixel_dec_ffn", "deform_points", "mask_dim", "dec_heads",
                    "dec_ffn", "mg_pool", "mtp_dim", "mtp_heads", "mtp_ffn", "cal_samples")
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise bad(name, "must be >= 1")
        for name in ("pixel_dec_layers", "dec_layers", "mtp_layers"):
            if int(getattr(self, name)) < 0:
                raise bad(name, "must be >= 0")
        if self.conv_kernel % 2 == 0:
            raise bad("conv_kernel", "must be odd")
        if self.image_size % 32:
            raise bad("image_size", "must be a multiple of 32 (four stages, strides 4..32)")
        if self.text_dim % self.text_heads:
            raise bad("text_heads", f"must divide text_dim={self.text_dim}")
        for d in self.dims:
            if d % self.fusion_heads:
                raise bad("fusion_heads", f"must divide every stage width {self.dims}")
            if self.cam and (d % 4 or (d // 4) % self.fusion_heads):
                raise bad("dims", "with cam on, every width must be a multiple of 4 and C/4 of fusion_heads")
        if self.text_dim % self.fusion_heads:
            raise bad("fusion_heads", f"must divide text_dim={self.text_dim}")
        if self.mask_dim % 4:
            raise bad("mask_dim", "must be a multiple of 4 (2-D sine positional encoding)")
        if self.mask_dim % self.dec_heads:
            raise bad("dec_heads", f"must divide mask_dim={self.mask_dim}")
        if self.mask_dim % self.pixel_dec_heads:
            raise bad("pixel_dec_heads", f"must divide mask_dim={self.mask_dim}")
        if self.mtp_dim % 4:
            raise bad("mtp_dim", "must be a multiple of 4 (2-D sine positional encoding)")
        if self.mtp_dim % self.mtp_heads:
            raise bad("mtp_heads", f"must divide mtp_dim={self.mtp_dim}")
        if self.mg_pool > self.image_size // 4:
            raise bad("mg_pool", f"must be <= image_size/4 = {self.image_size // 4}")
        if self.max_tokens < 2:
            raise bad("max_tokens", "needs room for [CLS] and [SEP]")
        for name in ("mg_mask_prob", "mg_mask_replace", "mg_noise_prob"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise bad(name, "must be a probability in [0, 1]")
        if self.mg_mask_replace + self.mg_noise_prob > 1.0 + 1e-9:
            raise bad("mg_noise_prob", f"mg_mask_replace + mg_noise_prob must be <= 1 (mg_mask_replace="
                                       f"{self.mg_mask_replace})")
        if not self.cal_tau > 0:
            raise bad("cal_tau", "must be > 0")
        for name in ("lambda_mg", "lambda_cal", "w_class", "w_bce", "w_dice"):
            if float(getattr(self, name)) < 0:
                raise bad(name, "must be >= 0")
        specials = [self.pad_id, self.cls_id, self.sep_id, self.mask_id, self.unk_id]
        if len(set(specials)) != 5:
            raise bad("mask_id", f"special ids must be distinct, got {specials}")
        for name in ("pad_id", "cls_id", "sep_id", "mask_id", "unk_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise bad(name, f"must lie in [0, vocab_size={self.vocab_size})")
        if self.vocab_size <= 5:
            raise bad("vocab_size", "needs at least one non-special word")

    @property
    def special_ids(self) -> tuple[int, ...]:
        return (self.pad_id, self.cls_id, self.sep_id, self.mask_id, self.unk_id)


# ============================================================================================ blocks


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of (B, C, H, W) maps (the repo's channels-first LayerNorm)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


def sine_position_encoding(height: int, width: int, dim: int, device: torch.device | None = None,
                           temperature: float = 10000.0) -> torch.Tensor:
    """DETR's normalised 2-D sine encoding, (dim, H, W): dim/2 channels for y then dim/2 for x, each half
    interleaving sin / cos; positions 1..H (1..W) scaled to (0, 2*pi]. `dim` must be a multiple of 4."""
    if dim % 4:
        raise ValueError(f"sine_position_encoding: dim must be a multiple of 4, got {dim}")
    feats = dim // 2
    eps, scale = 1e-6, 2 * math.pi
    y = torch.arange(1, height + 1, dtype=torch.float32, device=device)[:, None].expand(height, width)
    x = torch.arange(1, width + 1, dtype=torch.float32, device=device)[None, :].expand(height, width)
    y = y / (height + eps) * scale
    x = x / (width + eps) * scale
    k = torch.arange(feats, dtype=torch.float32, device=device)
    freq = temperature ** (2 * torch.div(k, 2, rounding_mode="floor") / feats)
    px, py = x[..., None] / freq, y[..., None] / freq
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=-1).flatten(-2)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=-1).flatten(-2)
    return torch.cat((py, px), dim=-1).permute(2, 0, 1)


class _Attention(nn.Module):
    """Plain multi-head attention (separate q/k/v/out projections). `allowed`: bool, broadcastable to
    (B, heads, Lq, Lk), True = may attend; every row must allow at least one key."""

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(kv_dim or dim, dim)
        self.v = nn.Linear(kv_dim or dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                allowed: torch.Tensor | None = None) -> torch.Tensor:
        b, lq, d = q.shape
        lk, h = k.shape[1], self.heads
        qh = self.q(q).view(b, lq, h, d // h).transpose(1, 2)
        kh = self.k(k).view(b, lk, h, d // h).transpose(1, 2)
        vh = self.v(v).view(b, lk, h, d // h).transpose(1, 2)
        o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=allowed)
        return self.out(o.transpose(1, 2).reshape(b, lq, d))


class _TransformerLayer(nn.Module):
    """Post-norm encoder layer (BERT layout): x = LN(x + attn(x)); x = LN(x + FFN(x)), GELU."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.attn = _Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ffn)
        self.ff2 = nn.Linear(ffn, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        allowed = None if key_valid is None else key_valid.bool()[:, None, None, :]
        x = self.norm1(x + self.attn(x, x, x, allowed))
        return self.norm2(x + self.ff2(F.gelu(self.ff1(x))))


def _bert_init(module: nn.Module) -> None:
    """BERT's initialisation: Linear / Embedding weights N(0, 0.02), biases 0, LayerNorm (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def count_parameters(module: nn.Module | Iterable[nn.Module]) -> int:
    """Number of distinct parameters (tied tensors counted once) of a module or of several modules."""
    modules = [module] if isinstance(module, nn.Module) else list(module)
    seen: dict[int, int] = {}
    for m in modules:
        for p in m.parameters():
            seen[id(p)] = p.numel()
    return sum(seen.values())


# ============================================================================================ encoders


class _ConvBlock(nn.Module):
    """Residual conv block (ConvNeXt layout): depthwise kxk -> LN -> 1x1 (4x) -> GELU -> 1x1, the
    pointwise part channels-last."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, 4 * dim)
        self.pw2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw2(F.gelu(self.pw1(self.norm(self.dw(x).permute(0, 2, 3, 1)))))
        return x + y.permute(0, 3, 1, 2)


class _BasicBlock(nn.Module):
    """ResNet basic block: conv kxk -> BN -> ReLU -> conv kxk -> BN, + identity, ReLU."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, kernel, padding=kernel // 2, bias=False)
        self.bn2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


def _conv_bn_relu(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU())


class ImageEncoder(nn.Module):
    """Four conv stages at strides 4/8/16/32 with widths `dims`. `stage(s, x)` downsamples (s > 0) and runs
    stage s; `forward(images)` runs all four without fusion and returns the four stage outputs.

    kind "convnext": the 4x4 patchify stem, LayerNorm and ConvNeXt blocks (the spec's tiny encoder, 8.2);
    kind "resnet": a stem of two stride-2 3x3 convolutions (3 -> stem_width -> dims[0]), ResNet basic blocks and
    stride-2 3x3 downsampling, BatchNorm throughout. From scratch the convnext encoder does not learn to tell the
    four ShapeRef shapes apart within hundreds of steps, even on a dense shape-labelling task where a plain conv
    net does (pipelines/magnet/README.md, "Why the backbone is pretrained"); the resnet kind does."""

    def __init__(self, dims: Sequence[int], blocks: Sequence[int], kernel: int = 3, kind: str = "convnext",
                 stem_width: int = 32) -> None:
        super().__init__()
        self.dims, self.kind = tuple(dims), kind
        if kind == "convnext":
            self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, stride=4), LayerNorm2d(dims[0]))
            self.down = nn.ModuleList(nn.Sequential(LayerNorm2d(dims[s]), nn.Conv2d(dims[s], dims[s + 1], 2, stride=2))
                                      for s in range(3))
            block: Callable[[int, int], nn.Module] = _ConvBlock
        elif kind == "resnet":
            self.stem = nn.Sequential(_conv_bn_relu(3, stem_width, 2), _conv_bn_relu(stem_width, dims[0], 2))
            self.down = nn.ModuleList(_conv_bn_relu(dims[s], dims[s + 1], 2) for s in range(3))
            block = _BasicBlock
        else:
            raise ValueError(f"ImageEncoder kind must be convnext or resnet, got {kind!r}")
        self.stages = nn.ModuleList(nn.Sequential(*[block(dims[s], kernel) for _ in range(blocks[s])])
                                    for s in range(4))

    def stage(self, s: int, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x) if s == 0 else self.down[s - 1](x)
        return self.stages[s](x)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        outs, x = [], images
        for s in range(4):
            x = self.stage(s, x)
            outs.append(x)
        return outs


class TextEncoder(nn.Module):
    """BERT-like encoder from scratch: word + learned position embeddings, LayerNorm, then `layers[s]`
    post-norm transformer layers per stage with the padding keys masked."""

    def __init__(self, vocab_size: int, max_tokens: int, dim: int, heads: int, ffn: int,
                 layers: Sequence[int]) -> None:
        super().__init__()
        self.word_emb = nn.Embedding(vocab_size, dim)
        self.pos_emb = nn.Embedding(max_tokens, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.stages = nn.ModuleList(nn.ModuleList(_TransformerLayer(dim, heads, ffn) for _ in range(n))
                                    for n in layers)
        _bert_init(self)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.norm(self.word_emb(ids) + self.pos_emb(pos)[None])

    def stage(self, s: int, lang: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        for layer in self.stages[s]:
            lang = layer(lang, attn)
        return lang

    def forward(self, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        lang = self.embed(ids)
        for s in range(len(self.stages)):
            lang = self.stage(s, lang, attn)
        return lang


class PWAM(nn.Module):
    """Pixel-word attention module, vision <- language (spec 2.2 steps 1-3): returns mm (B, HW, C).

    x: (B, HW, dim) visual tokens; lang: (B, N, lang_dim) words; attn: (B, N) 0/1 valid-token mask.
    """

    def __init__(self, dim: int, lang_dim: int, heads: int = 1) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"PWAM: heads={heads} must divide dim={dim}")
        self.dim, self.heads = dim, heads
        self.vis_project = nn.Linear(dim, dim)
        self.f_query = nn.Linear(dim, dim)
        self.q_norm = nn.LayerNorm(dim)
        self.f_key = nn.Linear(lang_dim, dim)
        self.f_value = nn.Linear(lang_dim, dim)
        self.out = nn.Linear(dim, dim)
        self.out_norm = nn.LayerNorm(dim)
        self.project_mm = nn.Linear(dim, dim)

    def attention(self, x: torch.Tensor, lang: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """LN(W(softmax(q k^T / sqrt(C) + (1e4 m - 1e4)) v)), (B, HW, C); pixels query words."""
        b, hw, c = x.shape
        n, h = lang.shape[1], self.heads
        m = attn.to(x.dtype)[:, :, None]                                   # (B, N, 1)
        q = self.q_norm(self.f_query(x)).view(b, hw, h, c // h).transpose(1, 2)      # (B, h, HW, d)
        k = (self.f_key(lang) * m).view(b, n, h, c // h).transpose(1, 2)               # (B, h, N, d)
        v = (self.f_value(lang) * m).view(b, n, h, c // h).transpose(1, 2)
        sim = (c ** -0.5) * (q @ k.transpose(-1, -2))                      # full-width scale (released code)
        sim = sim + (1e4 * m[:, None, None, :, 0] - 1e4)
        out = (sim.softmax(-1) @ v).transpose(1, 2).reshape(b, hw, c)
        return self.out_norm(self.out(out))

    def forward(self, x: torch.Tensor, lang: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        vis = F.gelu(self.vis_project(x))
        return F.gelu(self.project_mm(vis * self.attention(x, lang, attn)))


class Gate(nn.Module):
    """Gated residual update tanh(W2 act(W1 mm)) * mm, W1 and W2 bias-free (`init`: see the module docstring;
    "w2_zero" and "both_zero" give an exactly zero update at init)."""

    def __init__(self, dim: int, act: str = "gelu", init: str = "w2_zero") -> None:
        super().__init__()
        if act not in ("gelu", "relu") or init not in _CHOICES["gate_init"]:
            raise ValueError(f"Gate: act must be gelu/relu and init one of {_CHOICES['gate_init']}")
        self.w1 = nn.Linear(dim, dim, bias=False)
        self.w2 = nn.Linear(dim, dim, bias=False)
        self.act = F.gelu if act == "gelu" else F.relu
        self.reset(init)

    def reset(self, init: str = "w2_zero") -> None:
        if init == "normal":
            nn.init.trunc_normal_(self.w1.weight, std=0.02)
            nn.init.trunc_normal_(self.w2.weight, std=0.02)
            return
        if init == "both_zero":
            nn.init.zeros_(self.w1.weight)
        else:
            self.w1.reset_parameters()
        nn.init.zeros_(self.w2.weight)

    def forward(self, mm: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.w2(self.act(self.w1(mm)))) * mm


def _instance_norm_tokens(x: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-5) -> torch.Tensor:
    """InstanceNorm1d (no affine) over the token axis of (B, L, C), optionally over the valid tokens only."""
    if valid is None:
        xc = x - x.mean(1, keepdim=True)
        return xc * torch.rsqrt(xc.square().mean(1, keepdim=True) + eps)
    w = valid.to(x.dtype)[:, :, None]
    cnt = w.sum(1, keepdim=True).clamp_min(1.0)
    xc = x - (x * w).sum(1, keepdim=True) / cnt
    return xc * torch.rsqrt((xc.square() * w).sum(1, keepdim=True) / cnt + eps)


class LanguagePWAM(nn.Module):
    """Language <- vision PWAM (spec 2.3): words query pixels; returns r (B, N, lang_dim).

    x: (B, HW, vis_dim) visual tokens (before the vision-side update), lang: (B, N, lang_dim), attn: (B, N) 0/1.
    `mask_mode`: "intended" or "released" (module docstring).
    """

    def __init__(self, lang_dim: int, vis_dim: int, mask_mode: str = "intended", heads: int = 1) -> None:
        super().__init__()
        if mask_mode not in _CHOICES["lang_fusion_mask_mode"]:
            raise ValueError(f"LanguagePWAM: mask_mode must be one of {_CHOICES['lang_fusion_mask_mode']}")
        if lang_dim % heads:
            raise ValueError(f"LanguagePWAM: heads={heads} must divide lang_dim={lang_dim}")
        self.dim, self.heads, self.mask_mode = lang_dim, heads, mask_mode
        self.vis_project = nn.Linear(lang_dim, lang_dim)
        self.f_query = nn.Linear(lang_dim, lang_dim)
        self.f_key = nn.Linear(vis_dim, lang_dim)
        self.f_value = nn.Linear(vis_dim, lang_dim)
        self.out = nn.Linear(lang_dim, lang_dim)
        self.project_mm = nn.Linear(lang_dim, lang_dim)

    def attention(self, x: torch.Tensor, lang: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        b, hw, _ = x.shape
        n, c, h = lang.shape[1], self.dim, self.heads
        a = attn.to(lang.dtype)
        m = a if self.mask_mode == "intended" else (1.0 - a) * -10000.0   # released: BERT's additive mask
        q = (self.f_query(lang) * m[:, :, None]).view(b, n, h, c // h).transpose(1, 2)          # (B, h, N, d)
        k = _instance_norm_tokens(self.f_key(x)).view(b, hw, h, c // h).transpose(1, 2)    # (B, h, HW, d)
        v = _instance_norm_tokens(self.f_value(x)).view(b, hw, h, c // h).transpose(1, 2)
        sim = (c ** -0.5) * (q @ k.transpose(-1, -2))                      # (B, h, N, HW)
        sim = sim + (1e4 * m[:, None, :, None] - 1e4)                       # constant per row, as the code
        out = (sim.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        if self.mask_mode == "released":
            return _instance_norm_tokens(self.out(out))
        return _instance_norm_tokens(self.out(out), attn) * a[:, :, None]

    def forward(self, x: torch.Tensor, lang: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        vis = F.gelu(self.vis_project(lang))
        r = F.gelu(self.project_mm(vis * self.attention(x, lang, attn)))
        return r if self.mask_mode == "released" else r * attn.to(r.dtype)[:, :, None]


class _PyramidProj(nn.Module):
    """CAM branch projection on a pooled map: Conv(C,4C) -> LN2d -> Conv(4C,C) -> GELU -> Conv(C,C/4)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(dim, 4 * dim, 1, bias=False)
        self.norm = LayerNorm2d(4 * dim)
        self.c2 = nn.Conv2d(4 * dim, dim, 1, bias=False)
        self.c3 = nn.Conv2d(dim, dim // 4, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c3(F.gelu(self.c2(self.norm(self.c1(x)))))


class CAM(nn.Module):
    """Cross-modal alignment module: multi-scale global context (spec 2.2 CAM). Output y (B, C, H, W)."""

    def __init__(self, dim: int, lang_dim: int, sizes: Sequence[int], heads: int = 1) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError(f"CAM: dim must be a multiple of 4, got {dim}")
        self.dim, self.sizes, self.reduction = dim, tuple(sizes), dim // 4
        self.pyramids = nn.ModuleList(_PyramidProj(dim) for _ in self.sizes)
        self.fusions = nn.ModuleList(PWAM(dim // 4, lang_dim, heads) for _ in self.sizes)
        self.mix1 = nn.Linear(len(self.sizes) * (dim // 4) + dim, dim)
        self.mix_norm = nn.LayerNorm(dim)
        self.mix2 = nn.Linear(dim, dim)

    def branches(self, x: torch.Tensor, lang: torch.Tensor, attn: torch.Tensor) -> list[torch.Tensor]:
        """The fused pooled maps (B, C/4, p, p) before upsampling, p capped at min(H, W)."""
        b, _, h, w = x.shape
        outs = []
        for p, proj, fuse in zip(self.sizes, self.pyramids, self.fusions, strict=True):
            p = min(p, h, w)
            px = proj(F.adaptive_avg_pool2d(x, p)).flatten(2).transpose(1, 2)   # (B, p*p, C/4)
            outs.append(fuse(px, lang, attn).transpose(1, 2).reshape(b, self.reduction, p, p))
        return outs

    def forward(self, x: torch.Tensor, lang: torch.Tensor, attn: torch.Tensor, mm: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ups = [F.interpolate(o, size=(h, w), mode="bilinear", align_corners=True).flatten(2).transpose(1, 2)
               for o in self.branches(x, lang, attn)]
        y = F.gelu(self.mix2(self.mix_norm(self.mix1(torch.cat([*ups, mm], dim=2)))))
        return y.transpose(1, 2).reshape(b, c, h, w).contiguous()


class FusionEncoder(nn.Module):
    """Image and text encoders run stage by stage with bidirectional PWAM fusion (spec 2.1-2.3).

    At stage s: x = image stage s, lang = text stage s; mm = PWAM(x, lang); y_s = CAM(x, lang, mm) (cam) or LN(mm);
    if lang_fusion: lang <- lang + Gate_relu(LanguagePWAM(x, lang)) with x BEFORE the vision update; x <- x + Gate(mm).
    """

    def __init__(self, cfg: MagNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        dims = cfg.dims
        self.image = ImageEncoder(dims, cfg.blocks, cfg.conv_kernel, cfg.encoder, cfg.stem_width)
        self.text = TextEncoder(cfg.vocab_size, cfg.max_tokens, cfg.text_dim, cfg.text_heads, cfg.text_ffn,
                                cfg.text_layers)
        self.pwams = nn.ModuleList(PWAM(d, cfg.text_dim, cfg.fusion_heads) for d in dims)
        self.gates = nn.ModuleList(Gate(d, "gelu", cfg.gate_init) for d in dims)
        if cfg.cam:
            self.cams = nn.ModuleList(CAM(d, cfg.text_dim, sz, cfg.fusion_heads)
                                      for d, sz in zip(dims, cfg.cam_sizes, strict=True))
        else:
            self.out_norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        if cfg.lang_fusion:
            self.lang_pwams = nn.ModuleList(LanguagePWAM(cfg.text_dim, d, cfg.lang_fusion_mask_mode, cfg.fusion_heads)
                                            for d in dims)
            self.lang_gates = nn.ModuleList(Gate(cfg.text_dim, "relu", cfg.gate_init) for _ in dims)

    def forward(self, images: torch.Tensor, ids: torch.Tensor, attn: torch.Tensor,
                return_visual: bool = False) -> Any:
        """-> (ys: 4 maps (B, C_s, H_s, W_s), lang (B, N, text_dim)) [+ the 4 gated visual streams]."""
        x, lang = images, self.text.embed(ids)
        ys, xs = [], []
        for s in range(4):
            x = self.image.stage(s, x)
            lang = self.text.stage(s, lang, attn)
            b, c, h, w = x.shape
            tok = x.flatten(2).transpose(1, 2)                              # (B, HW, C)
            mm = self.pwams[s](tok, lang, attn)
            if self.cfg.cam:
                ys.append(self.cams[s](x, lang, attn, mm))
            else:
                ys.append(self.out_norms[s](mm).transpose(1, 2).reshape(b, c, h, w).contiguous())
            if self.cfg.lang_fusion:
                lang = lang + self.lang_gates[s](self.lang_pwams[s](tok, lang, attn))
            x = (tok + self.gates[s](mm)).transpose(1, 2).reshape(b, c, h, w).contiguous()
            xs.append(x)
        return (ys, lang, xs) if return_visual else (ys, lang)


# ============================================================================================ head


class FPNPixelDecoder(nn.Module):
    """Plain FPN: returns (mask features (B, mask_dim, H/4, W/4), [maps at 1/32, 1/16, 1/8] (conv_dim))."""

    def __init__(self, in_dims: Sequence[int], conv_dim: int, mask_dim: int) -> None:
        super().__init__()
        self.top = nn.Sequential(nn.Conv2d(in_dims[3], conv_dim, 3, padding=1), _group_norm(conv_dim), nn.ReLU())
        self.lateral = nn.ModuleList(nn.Sequential(nn.Conv2d(in_dims[s], conv_dim, 1), _group_norm(conv_dim))
                                     for s in (2, 1, 0))
        self.output = nn.ModuleList(nn.Sequential(nn.Conv2d(conv_dim, conv_dim, 3, padding=1),
                                                  _group_norm(conv_dim), nn.ReLU()) for _ in range(3))
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 1)

    def forward(self, ys: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        outs = [self.top(ys[3])]
        for lat, out, y in zip(self.lateral, self.output, (ys[2], ys[1], ys[0]), strict=True):
            cur = lat(y)
            outs.append(out(cur + F.interpolate(outs[-1], size=cur.shape[-2:], mode="bilinear",
                                                align_corners=False)))
        return self.mask_features(outs[-1]), outs[:3]


def ms_deform_attn_core(value: torch.Tensor, shapes: Sequence[tuple[int, int]], sampling_locations: torch.Tensor,
                        attention_weights: torch.Tensor) -> torch.Tensor:
    """Multi-scale deformable attention by bilinear `grid_sample` (zeros outside, align_corners=False).

    value (B, S, M, D) with S = sum of H_l W_l; sampling_locations (B, Lq, M, L, P, 2) in [0, 1] as (x, y);
    attention_weights (B, Lq, M, L, P). Returns (B, Lq, M*D).
    """
    b, _, m, d = value.shape
    _, lq, _, n_levels, n_points, _ = sampling_locations.shape
    per_level = value.split([h * w for h, w in shapes], dim=1)
    grids = sampling_locations * 2 - 1
    sampled = []
    for lvl, (h, w) in enumerate(shapes):
        v = per_level[lvl].permute(0, 2, 3, 1).reshape(b * m, d, h, w)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(b * m, lq, n_points, 2)
        sampled.append(F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False))
    stacked = torch.stack(sampled, dim=-2).reshape(b * m, d, lq, n_levels * n_points)
    weights = attention_weights.transpose(1, 2).reshape(b * m, 1, lq, n_levels * n_points)
    out = (stacked * weights).sum(-1).view(b, m * d, lq)
    return out.transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Deformable DETR's multi-scale deformable attention (initialisation as the original)."""

    def __init__(self, dim: int, levels: int, heads: int, points: int) -> None:
        super().__init__()
        self.dim, self.levels, self.heads, self.points = dim, levels, heads, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(heads, dtype=torch.float32) * (2.0 * math.pi / heads)
        grid = torch.stack([theta.cos(), theta.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(heads, 1, 1, 2).repeat(1, levels, points, 1)
        grid = grid * torch.arange(1, points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, src: torch.Tensor,
                shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        b, lq, _ = query.shape
        m, lv, p = self.heads, self.levels, self.points
        value = self.value_proj(src).view(b, src.shape[1], m, self.dim // m)
        offsets = self.sampling_offsets(query).view(b, lq, m, lv, p, 2)
        weights = self.attention_weights(query).view(b, lq, m, lv * p).softmax(-1).view(b, lq, m, lv, p)
        norm = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        loc = reference_points[:, :, None, :, None, :] + offsets / norm[None, None, None, :, None, :]
        return self.output_proj(ms_deform_attn_core(value, shapes, loc, weights))


class _DeformEncoderLayer(nn.Module):
    def __init__(self, dim: int, ffn: int, levels: int, heads: int, points: int) -> None:
        super().__init__()
        self.attn = MSDeformAttn(dim, levels, heads, points)
        self.norm1 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ffn)
        self.ff2 = nn.Linear(ffn, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, ref: torch.Tensor,
                shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        src = self.norm1(src + self.attn(src + pos, ref, src, shapes))
        return self.norm2(src + self.ff2(F.relu(self.ff1(src))))


class MSDeformPixelDecoder(nn.Module):
    """Mask2Former's MSDeformAttn pixel decoder with the four stage outputs as its levels (released cfg):
    returns (mask features at 1/4, [encoder levels at 1/32, 1/16, 1/8])."""

    def __init__(self, in_dims: Sequence[int], conv_dim: int, mask_dim: int, layers: int, heads: int, ffn: int,
                 points: int) -> None:
        super().__init__()
        self.conv_dim = conv_dim
        self.input_proj = nn.ModuleList(nn.Sequential(nn.Conv2d(in_dims[s], conv_dim, 1), _group_norm(conv_dim))
                                        for s in (3, 2, 1, 0))
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)
            nn.init.zeros_(proj[0].bias)
        self.layers = nn.ModuleList(_DeformEncoderLayer(conv_dim, ffn, 4, heads, points) for _ in range(layers))
        self.level_embed = nn.Parameter(torch.randn(4, conv_dim))
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 1)

    def forward(self, ys: Sequence[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        srcs = [proj(y) for proj, y in zip(self.input_proj, (ys[3], ys[2], ys[1], ys[0]), strict=True)]
        shapes = [(int(s.shape[2]), int(s.shape[3])) for s in srcs]
        b, dev = srcs[0].shape[0], srcs[0].device
        flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat([(sine_position_encoding(h, w, self.conv_dim, dev).flatten(1).t() + self.level_embed[i])
                         for i, (h, w) in enumerate(shapes)], 0)[None]
        refs = []
        for h, w in shapes:
            ry, rx = torch.meshgrid(torch.linspace(0.5, h - 0.5, h, device=dev) / h,
                                    torch.linspace(0.5, w - 0.5, w, device=dev) / w, indexing="ij")
            refs.append(torch.stack((rx.reshape(-1), ry.reshape(-1)), -1))
        ref = torch.cat(refs, 0)[None, :, None, :].expand(b, -1, len(shapes), 2)
        for layer in self.layers:
            flat = layer(flat, pos, ref, shapes)
        outs = [z.transpose(1, 2).reshape(b, self.conv_dim, h, w).contiguous()
                for z, (h, w) in zip(flat.split([h * w for h, w in shapes], dim=1), shapes, strict=True)]
        return self.mask_features(outs[-1]), outs[:3]


class _DecoderLayer(nn.Module):
    """Masked cross-attention -> self-attention -> FFN, each post-norm (Mask2Former, dropout 0)."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.cross = _Attention(dim, heads)
        self.norm_c = nn.LayerNorm(dim)
        self.self_attn = _Attention(dim, heads)
        self.norm_s = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, ffn)
        self.ff2 = nn.Linear(ffn, dim)
        self.norm_f = nn.LayerNorm(dim)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, q: torch.Tensor, qpos: torch.Tensor, mem: torch.Tensor, pos: torch.Tensor,
                allowed: torch.Tensor) -> torch.Tensor:
        q = self.norm_c(q + self.cross(q + qpos, mem + pos, mem, allowed))
        q = self.norm_s(q + self.self_attn(q + qpos, q + qpos, q))
        return self.norm_f(q + self.ff2(F.relu(self.ff1(q))))


class _MLP(nn.Module):
    def __init__(self, dim_in: int, hidden: int, dim_out: int, layers: int) -> None:
        super().__init__()
        dims = [dim_in] + [hidden] * (layers - 1) + [dim_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MaskDecoder(nn.Module):
    """Mask2Former's masked-attention transformer decoder with ONE learnable query (spec 2.1).

    forward(multi_scale [1/32, 1/16, 1/8] maps (B, dim, h, w), mask_features (B, mask_dim, H/4, W/4)) ->
    (pred_logits: list of (B, 1, 2), pred_masks: list of (B, 1, H/4, W/4)), layers + 1 entries each.
    """

    def __init__(self, dim: int, mask_dim: int, layers: int, heads: int, ffn: int, queries: int = 1) -> None:
        super().__init__()
        self.dim, self.queries = dim, queries
        self.layers = nn.ModuleList(_DecoderLayer(dim, heads, ffn) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.query_feat = nn.Embedding(queries, dim)
        self.query_embed = nn.Embedding(queries, dim)
        self.level_embed = nn.Embedding(3, dim)
        self.class_embed = nn.Linear(dim, 2)
        self.mask_embed = _MLP(dim, dim, mask_dim, 3)

    def _heads(self, q: torch.Tensor, mask_features: torch.Tensor,
               size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.norm(q)
        cls = self.class_embed(out)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(out), mask_features)
        small = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        allowed = (small.sigmoid() >= 0.5).flatten(2).detach()              # (B, Q, hw); blocked = prob < 0.5
        allowed = allowed | ~allowed.any(-1, keepdim=True)                  # fully blocked rows -> attend all
        return cls, masks, allowed[:, None]

    def forward(self, multi_scale: Sequence[torch.Tensor],
                mask_features: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        b = mask_features.shape[0]
        sizes = [(int(x.shape[2]), int(x.shape[3])) for x in multi_scale]
        mems = [x.flatten(2).transpose(1, 2) + self.level_embed.weight[i] for i, x in enumerate(multi_scale)]
        poss = [sine_position_encoding(h, w, self.dim, x.device).flatten(1).t()[None]
                for (h, w), x in zip(sizes, multi_scale, strict=True)]
        q = self.query_feat.weight[None].expand(b, -1, -1)
        qpos = self.query_embed.weight[None].expand(b, -1, -1)
        cls, masks, allowed = self._heads(q, mask_features, sizes[0])
        logits, preds = [cls], [masks]
        for i, layer in enumerate(self.layers):
            lvl = i % 3
            q = layer(q, qpos, mems[lvl], poss[lvl], allowed)
            cls, masks, allowed = self._heads(q, mask_features, sizes[(i + 1) % 3])
            logits.append(cls)
            preds.append(masks)
        return logits, preds


# ============================================================================================ mask grounding


def mask_tokens(ids: torch.Tensor, attn: torch.Tensor, *, generator: torch.Generator,
                cfg: MagNetConfig | None = None, mask_prob: float = 0.15, mask_replace: float = 0.9,
                noise_prob: float = 0.0, force_one: bool = True, mask_id: int = MASK_ID,
                special_ids: Sequence[int] = (PAD_ID, CLS_ID, SEP_ID, MASK_ID, UNK_ID),
                vocab_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """OVR-CNN-style MLM masking (spec 2.4 step 1) -> (masked_ids, targets), deterministic given `generator`.

    Eligible: attn == 1 and not a special id. Each eligible token is selected w.p. mask_prob; a selected token
    becomes mask_id w.p. mask_replace, a uniformly drawn non-special word w.p. noise_prob (needs vocab_size),
    else stays. targets = the original id at selected positions, IGNORE_INDEX (-100) elsewhere. With
    force_one, a sentence with eligible tokens but no selection gets one uniformly chosen eligible token.
    Values from `cfg` (if given) override the keyword defaults.
    """
    if cfg is not None:
        mask_prob, mask_replace, noise_prob = cfg.mg_mask_prob, cfg.mg_mask_replace, cfg.mg_noise_prob
        force_one, mask_id, special_ids, vocab_size = cfg.mg_force_one, cfg.mask_id, cfg.special_ids, cfg.vocab_size
    if noise_prob > 0 and vocab_size is None:
        raise ValueError("mask_tokens: noise_prob > 0 needs vocab_size")
    dev = ids.device
    specials = torch.tensor(sorted(set(special_ids)), device=dev)
    eligible = (attn > 0) & ~torch.isin(ids, specials)
    u_select = torch.rand(ids.shape, generator=generator).to(dev)
    u_force = torch.rand(ids.shape, generator=generator).to(dev)
    u_action = torch.rand(ids.shape, generator=generator).to(dev)
    selected = eligible & (u_select < mask_prob)
    if force_one:
        need = eligible.any(1) & ~selected.any(1)
        pick = torch.where(eligible, u_force, torch.full_like(u_force, -1.0)).argmax(1)
        forced = torch.zeros_like(selected)
        forced[torch.arange(ids.shape[0], device=dev), pick] = True
        selected = selected | (forced & need[:, None])
    masked = ids.clone()
    masked[selected & (u_action < mask_replace)] = mask_id
    if noise_prob > 0:
        assert vocab_size is not None
        words = torch.tensor([i for i in range(vocab_size) if i not in set(special_ids)], device=dev)
        draw = words[torch.randint(len(words), ids.shape, generator=generator).to(dev)]
        noisy = selected & (u_action >= mask_replace) & (u_action < mask_replace + noise_prob)
        masked[noisy] = draw[noisy]
    targets = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    return masked, targets


class MaskEncoder(nn.Module):
    """GT mask -> mask tokens (B, pool*pool, dim): area pooling, MLP 1->dim->dim (ReLU), + 2-D sine PE."""

    def __init__(self, dim: int, pool: int, use_pe: bool = True) -> None:
        super().__init__()
        self.dim, self.pool, self.use_pe = dim, pool, use_pe
        self.fc1 = nn.Linear(1, dim)
        self.fc2 = nn.Linear(dim, dim)

    def encode_values(self, values: torch.Tensor) -> torch.Tensor:
        """Per-position MLP on pooled mask values (B, P) -> (B, P, dim), no positional encoding."""
        return self.fc2(F.relu(self.fc1(values[..., None])))

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(mask.float()[:, None], self.pool).flatten(1)     # (B, P)
        tok = self.encode_values(pooled)
        if self.use_pe:
            pe = sine_position_encoding(self.pool, self.pool, self.dim, mask.device).flatten(1).t()
            tok = tok + pe[None]
        return tok


class MaskedTokenPredictor(nn.Module):
    """Single-stream transformer over [text_in(T)+type0, vis_proj(V)(+vis_pos)+type1, M+type2] (padding text
    keys masked); returns the hidden states at the text positions (B, N, dim).

    Visual and mask tokens are separate tokens, so only positional encodings (`vis_pos` here, the mask
    encoder's PE on M) tell the transformer which visual token lies under which mask token; without them the
    output is a set function of V and of M separately. Reading "the visual content under the mask" also needs
    two attention hops (V <-> M, then text <- V), i.e. mtp_layers >= 2.
    """

    def __init__(self, text_in: int, vis_in: int, dim: int, heads: int, layers: int, ffn: int) -> None:
        super().__init__()
        self.text_proj = nn.Identity() if text_in == dim else nn.Linear(text_in, dim)
        self.vis_proj = nn.Linear(vis_in, dim)
        self.type_emb = nn.Embedding(3, dim)
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(_TransformerLayer(dim, heads, ffn) for _ in range(layers))
        _bert_init(self)

    def forward(self, text: torch.Tensor, attn: torch.Tensor, vis: torch.Tensor, mask_tok: torch.Tensor,
                vis_pos: torch.Tensor | None = None) -> torch.Tensor:
        n = text.shape[1]
        t = self.text_proj(text) + self.type_emb.weight[0]
        v = self.vis_proj(vis) + self.type_emb.weight[1]
        if vis_pos is not None:
            v = v + vis_pos
        m = mask_tok + self.type_emb.weight[2]
        x = self.norm(torch.cat([t, v, m], 1))
        valid = torch.cat([attn > 0, torch.ones(v.shape[:2], dtype=torch.bool, device=v.device),
                           torch.ones(m.shape[:2], dtype=torch.bool, device=m.device)], 1)
        for layer in self.layers:
            x = layer(x, valid)
        return x[:, :n]


class LMHead(nn.Module):
    """BERT's LM prediction head: dense -> GELU -> LN -> decoder to the vocabulary (+ bias); the decoder
    weight is `tied_weight` (the word embedding) when given."""

    def __init__(self, dim: int, vocab_size: int, tied_weight: nn.Parameter | None = None) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.decoder = nn.Linear(dim, vocab_size)
        _bert_init(self)
        if tied_weight is not None:
            if tuple(tied_weight.shape) != (vocab_size, dim):
                raise ValueError(f"LMHead: tied weight {tuple(tied_weight.shape)} != {(vocab_size, dim)}")
            self.decoder.weight = tied_weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(F.gelu(self.dense(h))))


class MGHead(nn.Module):
    """Mask Grounding's training-only modules: mask encoder, masked token predictor and LM head. With
    `mg_mask_pe` the same 2-D sine encoding of the mg_pool grid is added to the mask AND the visual tokens."""

    def __init__(self, cfg: MagNetConfig, word_emb: nn.Parameter | None = None) -> None:
        super().__init__()
        self.pool, self.use_pe = cfg.mg_pool, cfg.mg_mask_pe
        self.mask_encoder = MaskEncoder(cfg.mtp_dim, cfg.mg_pool, cfg.mg_mask_pe)
        self.mtp = MaskedTokenPredictor(cfg.mask_dim, cfg.mask_dim, cfg.mtp_dim, cfg.mtp_heads, cfg.mtp_layers,
                                        cfg.mtp_ffn)
        tie = word_emb if (word_emb is not None and cfg.mtp_dim == cfg.text_dim) else None
        self.lm_head = LMHead(cfg.mtp_dim, cfg.vocab_size, tie)

    def forward(self, text: torch.Tensor, attn: torch.Tensor, vis: torch.Tensor, gt_mask: torch.Tensor,
                mask_mode: str = "true") -> torch.Tensor:
        """text: lang_proj(T_m) (B, N, mask_dim); vis: pooled features (B, P, mask_dim) -> logits (B, N, V)."""
        mask_tok = self.mask_encoder(gt_mask)
        pos = None
        if self.use_pe:
            pos = sine_position_encoding(self.pool, self.pool, mask_tok.shape[-1], vis.device).flatten(1).t()[None]
        if mask_mode == "zero":       # text-only: no visual or mask token carries anything
            vis, mask_tok, pos = torch.zeros_like(vis), torch.zeros_like(mask_tok), None
        elif mask_mode != "true":
            raise ValueError(f"mask_mode must be 'true' or 'zero', got {mask_mode!r}")
        return self.lm_head(self.mtp(text, attn, vis, mask_tok, pos))


def mg_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L_MG: cross-entropy over the selected tokens (targets != -100), mean over the batch's selected tokens;
    0 when nothing is selected."""
    if not bool((targets != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)


# ============================================================================================ losses / inference


def downsample_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """GT (B, H, W) in {0, 1} -> (B, h, w) in {0, 1}: area pooling to `size`, then > 0.5."""
    return (F.adaptive_avg_pool2d(mask.float()[:, None], size)[:, 0] > 0.5).float()


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mask2Former's dice loss (+1 smoothing) per mask, mean over masks; logits/target (B, ...)."""
    p = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def segmentation_loss(pred_logits: Sequence[torch.Tensor], pred_masks: Sequence[torch.Tensor], gt: torch.Tensor,
                      w_class: float = 2.0, w_bce: float = 5.0, w_dice: float = 5.0) -> torch.Tensor:
    """Single-query Mask2Former loss summed over the deep-supervision predictions. pred_logits: (B, 1, 2) each;
    pred_masks: (B, 1, h, w) each; gt: (B, h, w) in {0, 1} at the logits' resolution. Class index 1 = target."""
    target_cls = torch.ones(gt.shape[0], dtype=torch.long, device=gt.device)
    total = gt.new_zeros(())
    for cls, m in zip(pred_logits, pred_masks, strict=True):
        ml = m[:, 0]
        total = total + w_class * F.cross_entropy(cls[:, 0], target_cls) \
            + w_bce * F.binary_cross_entropy_with_logits(ml, gt) + w_dice * dice_loss(ml, gt)
    return total


def _info_nce(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """mean_i -log(exp(pos_i) / (exp(pos_i) + sum_j exp(neg_j))), pos (P,), neg (N,)."""
    denom = torch.logsumexp(torch.cat([pos[:, None], neg[None].expand(pos.shape[0], -1)], 1), 1)
    return (denom - pos).mean()


def cal_loss(pix: torch.Tensor, sent: torch.Tensor, gt: torch.Tensor, tau: float = 0.07, max_samples: int = 512,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """L_CAL = L_P2T + L_P2P (spec 2.5), mean over images that have both fg and bg pixels.

    pix: (B, D, h, w) L2-normalised pixel features; sent: (B, D) L2-normalised sentence features; gt: (B, h, w)
    in {0, 1}. At most `max_samples` fg and bg pixels per image (random subset drawn with `generator`).
    """
    losses = []
    for f, t, g in zip(pix.flatten(2), sent, gt.flatten(1), strict=True):
        fg, bg = torch.nonzero(g > 0.5).flatten(), torch.nonzero(g <= 0.5).flatten()
        if fg.numel() == 0 or bg.numel() == 0:
            continue
        if fg.numel() > max_samples:
            fg = fg[torch.randperm(fg.numel(), generator=generator)[:max_samples].to(fg.device)]
        if bg.numel() > max_samples:
            bg = bg[torch.randperm(bg.numel(), generator=generator)[:max_samples].to(bg.device)]
        ffg, fbg = f[:, fg].t(), f[:, bg].t()                               # (P, D), (N, D)
        p2t = _info_nce(ffg @ t / tau, fbg @ t / tau)
        c = F.normalize(ffg.mean(0), dim=0)
        p2p = _info_nce(ffg @ c / tau, fbg @ c / tau)
        losses.append(p2t + p2p)
    if not losses:
        return pix.sum() * 0.0
    return torch.stack(losses).mean()


def mask_probability(pred_logits: torch.Tensor, pred_masks: torch.Tensor, size: tuple[int, int],
                     use_class_score: bool = False) -> torch.Tensor:
    """Spec 2.7 + corrections: prob (B, H, W) = sum_q [softmax(cls)[..., 1]] * sigmoid(bilinear
    align_corners=True upsample of the mask logits); the class factor only with use_class_score."""
    prob = F.interpolate(pred_masks, size=size, mode="bilinear", align_corners=True).sigmoid()
    if use_class_score:
        prob = prob * pred_logits.softmax(-1)[..., 1][..., None, None]
    return prob.sum(1)


# ============================================================================================ model


class MagNet(nn.Module):
    """MagNet (spec 2): FusionEncoder -> pixel decoder -> 1-query masked-attention decoder, plus the
    training-only MG head (`mg_head`) and the `lang_proj` used by MG and CAL.

    Inference (`predict`) uses `encoder`, `pixel_decoder` and `mask_decoder` only; `mg_head` and `lang_proj`
    are built after them (the same seed gives the same inference weights with MG on or off) and never called
    by `predict`, so MG changes neither the inference parameter count nor the inference outputs (spec 9.1.4).
    """

    INFERENCE_MODULES = ("encoder", "pixel_decoder", "mask_decoder")

    def __init__(self, cfg: MagNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = FusionEncoder(cfg)
        if cfg.pixel_decoder == "fpn":
            self.pixel_decoder: nn.Module = FPNPixelDecoder(cfg.dims, cfg.mask_dim, cfg.mask_dim)
        else:
            self.pixel_decoder = MSDeformPixelDecoder(cfg.dims, cfg.mask_dim, cfg.mask_dim, cfg.pixel_dec_layers,
                                                      cfg.pixel_dec_heads, cfg.pixel_dec_ffn, cfg.deform_points)
        self.mask_decoder = MaskDecoder(cfg.mask_dim, cfg.mask_dim, cfg.dec_layers, cfg.dec_heads, cfg.dec_ffn)
        # ---- training-only heads: built last, never used by predict
        self.lang_proj = nn.Linear(cfg.text_dim, cfg.mask_dim) if (cfg.mg or cfg.cal) else None
        self.mg_head = MGHead(cfg, self.encoder.text.word_emb.weight) if cfg.mg else None

    # ---------------------------------------------------------------- inference path
    def encode(self, images: torch.Tensor, ids: torch.Tensor,
               attn: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """-> (mask features (B, mask_dim, H/4, W/4), multi-scale maps [1/32, 1/16, 1/8], lang (B, N, text_dim))."""
        ys, lang = self.encoder(images, ids, attn)
        mask_features, multi_scale = self.pixel_decoder(ys)
        return mask_features, multi_scale, lang

    def forward(self, images: torch.Tensor, ids: torch.Tensor, attn: torch.Tensor) -> dict[str, Any]:
        mask_features, multi_scale, lang = self.encode(images, ids, attn)
        logits, masks = self.mask_decoder(multi_scale, mask_features)
        return {"pred_logits": logits, "pred_masks": masks, "mask_features": mask_features, "lang": lang}

    @torch.no_grad()
    def predict(self, images: torch.Tensor, ids: torch.Tensor, attn: torch.Tensor,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        """Probabilities (B, H, W) at `size` (default: the image size) from the last decoder layer."""
        out = self.forward(images, ids, attn)
        size = tuple(images.shape[-2:]) if size is None else tuple(size)
        return mask_probability(out["pred_logits"][-1], out["pred_masks"][-1], size, self.cfg.use_class_score)

    def inference_modules(self) -> list[nn.Module]:
        return [getattr(self, name) for name in self.INFERENCE_MODULES]

    def inference_parameters(self) -> int:
        """Number of distinct parameters `predict` uses (MG / CAL heads excluded)."""
        return count_parameters(self.inference_modules())

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """The state of the modules `predict` uses, with this module's key names."""
        return {k: v for k, v in self.state_dict().items() if k.split(".", 1)[0] in self.INFERENCE_MODULES}

    # ---------------------------------------------------------------- training-only heads
    def sentence_features(self, lang: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """L2-normalised lang_proj of the mean over valid tokens, (B, mask_dim)."""
        if self.lang_proj is None:
            raise RuntimeError("sentence_features needs lang_proj, which exists only with mg or cal on")
        w = attn.to(lang.dtype)[:, :, None]
        pooled = (lang * w).sum(1) / w.sum(1).clamp_min(1.0)
        return F.normalize(self.lang_proj(pooled), dim=-1)

    @staticmethod
    def pixel_features(mask_features: torch.Tensor) -> torch.Tensor:
        """Per-pixel L2-normalised mask features (B, D, h, w)."""
        return F.normalize(mask_features, dim=1)

    def mg_logits(self, images: torch.Tensor, masked_ids: torch.Tensor, attn: torch.Tensor, gt_mask: torch.Tensor,
                  mask_mode: str = "true", lang: torch.Tensor | None = None,
                  mask_features: torch.Tensor | None = None) -> torch.Tensor:
        """Vocabulary logits (B, N, V) of the masked token predictor.

        T_m = `lang` if given, else the fused language output of the masked forward ("fused") or the language
        encoder alone ("text"); V = `mask_features` if given, else those of the masked forward, pooled to
        mg_pool x mg_pool. gt_mask (B, H, W): the mask to ground on (pass another object's for the shuffled
        check). mask_mode "zero": visual and mask tokens zeroed (text-only MTP).
        """
        if self.mg_head is None or self.lang_proj is None:
            raise RuntimeError("mg_logits needs cfg.mg = True")
        if mask_features is None or (lang is None and self.cfg.mg_text_pass == "fused"):
            mf, _, lang_f = self.encode(images, masked_ids, attn)
            mask_features = mf if mask_features is None else mask_features
            if lang is None and self.cfg.mg_text_pass == "fused":
                lang = lang_f
        if lang is None:
            lang = self.encoder.text(masked_ids, attn)
        vis = F.adaptive_avg_pool2d(mask_features, self.cfg.mg_pool).flatten(2).transpose(1, 2)
        return self.mg_head(self.lang_proj(lang), attn, vis, gt_mask, mask_mode)

    def losses(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """total = seg + lambda_mg * mg + lambda_cal * cal (disabled terms are 0).

        batch: images (B, 3, H, W) normalised, ids (B, N) long, attn (B, N) 0/1, masks (B, H, W) 0/1.
        `generator` draws the MG token masking and the CAL pixel subsets.
        """
        cfg = self.cfg
        images, ids, attn, masks = batch["images"], batch["ids"], batch["attn"], batch["masks"]
        b = ids.shape[0]
        masked_ids = targets = masked_feats = masked_lang = None
        masked_pass = cfg.mg and (cfg.mg_text_pass == "fused" or cfg.mg_visual == "masked")
        if masked_pass:
            # the main and the masked forward as ONE batch of 2B (every op is per-sample, so this equals two
            # separate passes; it only saves per-call overhead)
            masked_ids, targets = mask_tokens(ids, attn, generator=generator, cfg=cfg)
            mf2, ms2, lang2 = self.encode(torch.cat([images, images]), torch.cat([ids, masked_ids]),
                                          torch.cat([attn, attn]))
            logits_, masks_ = self.mask_decoder([z[:b] for z in ms2], mf2[:b])
            out = {"pred_logits": logits_, "pred_masks": masks_, "mask_features": mf2[:b], "lang": lang2[:b]}
            masked_feats, masked_lang = mf2[b:], lang2[b:]
        else:
            out = self.forward(images, ids, attn)
        gt = downsample_mask(masks, tuple(out["pred_masks"][-1].shape[-2:]))
        seg = segmentation_loss(out["pred_logits"], out["pred_masks"], gt, cfg.w_class, cfg.w_bce, cfg.w_dice)
        zero = seg.new_zeros(())
        mg, cal = zero, zero
        if cfg.mg:
            if masked_ids is None:
                masked_ids, targets = mask_tokens(ids, attn, generator=generator, cfg=cfg)
            lang = masked_lang if cfg.mg_text_pass == "fused" else self.encoder.text(masked_ids, attn)
            feats = out["mask_features"] if cfg.mg_visual == "main" else masked_feats
            logits = self.mg_logits(images, masked_ids, attn, masks, lang=lang, mask_features=feats)
            mg = mg_loss(logits, targets)
        if cfg.cal:
            cal = cal_loss(self.pixel_features(out["mask_features"]), self.sentence_features(out["lang"], attn),
                           gt, cfg.cal_tau, cfg.cal_samples, generator)
        total = seg + cfg.lambda_mg * mg + cfg.lambda_cal * cal
        return {"total": total, "seg": seg, "mg": mg, "cal": cal}
