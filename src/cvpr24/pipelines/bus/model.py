"""BUS's pieces as small, batched tensor functions, plus the segmentation network.

Read top to bottom: the network (`SegNet`: a 4-stage conv encoder with a SegFormer-style all-MLP head whose
fused 1/4-resolution feature is what DECON contrasts), the open-set pseudo-label rule (2.3), label-free mask
refinement (2.3), ClassMix and masked-image consistency (2.2), OpenReMix's resizing-object and
attaching-private mixes (2.4), and the DECON loss (2.5). Section numbers refer to pipelines/bus's spec.
Everything works on a whole batch at once; nothing here loops over pixels.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cvpr24.core.safety import load_weights
from cvpr24.pipelines.bus.labels import IGNORE_ID, NUM_CLASSES, PRIVATE_ID, THING_IDS


# -------------------------------------------------------------------------------------------- network
def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    # GroupNorm, not BatchNorm: the student sees source, mixed and masked images in one batch, and the EMA
    # teacher must not inherit batch statistics of that mixture (MiT uses LayerNorm for the same reason)
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.GroupNorm(4, cout), nn.ReLU(inplace=True))


class SegNet(nn.Module):
    """Encoder at strides 4/8/16/32 (like MiT's four stages) and an all-MLP decoder (SegFormer's head):
    each stage projected to `embed` channels, upsampled to 1/4, concatenated and fused. `forward` returns
    the class logits at 1/4 resolution and the fused feature (the one DECON uses)."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 48, 64), embed: int = 48, num_classes: int = NUM_CLASSES,
                 dropout: float = 0.1):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.stem = nn.Sequential(_conv(3, w1 // 2, 2), _conv(w1 // 2, w1, 2), _conv(w1, w1))  # 1/4
        self.stage2 = nn.Sequential(_conv(w1, w2, 2), _conv(w2, w2))                            # 1/8
        self.stage3 = nn.Sequential(_conv(w2, w3, 2), _conv(w3, w3))                            # 1/16
        self.stage4 = nn.Sequential(_conv(w3, w4, 2), _conv(w4, w4))                            # 1/32
        self.proj = nn.ModuleList(nn.Conv2d(w, embed, 1) for w in widths)
        self.fuse = nn.Sequential(nn.Conv2d(4 * embed, embed, 1, bias=False), nn.GroupNorm(4, embed), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed, num_classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f1 = self.stem(x)
        f2 = self.stage2(f1)
        f3 = self.stage3(f2)
        f4 = self.stage4(f3)
        size = f1.shape[-2:]
        ups = [F.interpolate(p(f), size=size, mode="bilinear", align_corners=False) if i else p(f)
               for i, (p, f) in enumerate(zip(self.proj, (f1, f2, f3, f4), strict=True))]
        feat = self.fuse(torch.cat(ups, 1))
        return self.classifier(self.dropout(feat)), feat


def full_res_logits(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    logits, feat = model(x)
    return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False), feat


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_user_weights(path: str | Path | None, what: str, where: str) -> dict[str, torch.Tensor]:
    """Pretrained weights only from a user's file, loaded with `weights_only=True`; clear error if absent."""
    if not path or not Path(path).is_file():
        raise FileNotFoundError(
            f"{what} weights not found at {path!r}. This profile needs them and nothing is downloaded at run "
            f"time: {where}, then set the path in conf/local/parameters/bus.yml (see pipelines/bus/README.md)."
        )
    state = load_weights(path)
    return state.get("state_dict", state) if isinstance(state, dict) else state


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """teacher <- alpha * teacher + (1 - alpha) * student (parameters); buffers (BN statistics) copied."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(alpha).add_(s.detach(), alpha=1 - alpha)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)


# ----------------------------------------------------------------------------- open-set pseudo-labels
def open_set_pseudo_labels(probs: torch.Tensor, pseudo_thres: float, conf_thres: float
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """probs (B, C, H, W) softmax of the teacher. Returns the pseudo-label (B, H, W): argmax, and
    `private` (13) where the max probability is <= `pseudo_thres` (2.3); and the DACS weight (B,): one scalar
    for the whole batch, the fraction of the batch's pixels whose confidence is >= `conf_thres` (as DACS/MIC
    and the released BUS code compute it), repeated per sample. A per-sample share would down-weight exactly
    the images with the most low-confidence (unknown) pixels."""
    p, y = probs.max(1)
    y = torch.where(p <= pseudo_thres, torch.full_like(y, PRIVATE_ID), y)
    weight = (p >= conf_thres).float().mean().expand(p.shape[0]).clone()
    return y, weight


def threshold_predictions(probs: torch.Tensor, thres: float, closed_set: bool = False) -> torch.Tensor:
    """Test-time prediction: argmax (over the 13 common channels when `closed_set`), private where the
    max probability is <= `thres` (thres < 0 disables the rule)."""
    if closed_set:
        probs = probs[:, :PRIVATE_ID]
    p, y = probs.max(1)
    if thres >= 0:
        y = torch.where(p <= thres, torch.full_like(y, PRIVATE_ID), y)
    return y


def refine_with_masks(labels: torch.Tensor, segments: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Label-free mask refinement: inside each segment every pixel takes the segment's majority label.
    labels (B, H, W) in [0, num_classes) or 255 (ignored in the vote; kept where a segment has no vote);
    segments (B, H, W) integer ids per image (any range). Ties go to the smaller class id."""
    B = labels.shape[0]
    seg = segments.long()
    seg = seg - seg.flatten(1).min(1).values[:, None, None]
    n_seg = int(seg.max()) + 1
    flat_seg = (seg + torch.arange(B, device=seg.device)[:, None, None] * n_seg).flatten()
    valid = labels.flatten() != IGNORE_ID
    votes = torch.zeros(B * n_seg, num_classes, device=labels.device)
    votes.index_put_((flat_seg[valid], labels.flatten()[valid].long()),
                     torch.ones(int(valid.sum()), device=labels.device), accumulate=True)
    majority = votes.argmax(1)
    has_vote = votes.sum(1) > 0
    out = torch.where(has_vote[flat_seg], majority[flat_seg], labels.flatten().long())
    return out.view_as(labels).to(labels.dtype)


def in_refinement_window(step: int, total: int, ratio: float) -> bool:
    """The last `ratio` of every quarter of training (2.3): with 40k steps and 0.3, 7k-10k, 17k-20k, ..."""
    quarter = total / 4.0
    return (step % quarter) >= (1.0 - ratio) * quarter


# ------------------------------------------------------------------------------ DACS / MIC mixing
def classmix_masks(src_labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per sample, half of the classes present in the source label (255 excluded, rounded up) -> (B, H, W)
    bool mask of their pixels."""
    B = src_labels.shape[0]
    masks = torch.zeros_like(src_labels, dtype=torch.bool)
    for b in range(B):  # the class draw is per sample; the masking itself is a tensor op
        classes = torch.unique(src_labels[b])
        classes = classes[classes != IGNORE_ID]
        if classes.numel() == 0:
            continue
        k = (classes.numel() + 1) // 2
        chosen = classes[torch.randperm(classes.numel(), generator=generator)[:k]]
        masks[b] = torch.isin(src_labels[b], chosen)
    return masks


def colour_jitter(x: torch.Tensor, generator: torch.Generator, strength: float = 0.2) -> torch.Tensor:
    """Batched strong colour augmentation (brightness, contrast, per-channel gain); x in [0, 1]."""
    B = x.shape[0]
    bright = 1 + strength * (2 * torch.rand(B, 1, 1, 1, generator=generator) - 1)
    contrast = 1 + strength * (2 * torch.rand(B, 1, 1, 1, generator=generator) - 1)
    gain = 1 + 0.5 * strength * (2 * torch.rand(B, 3, 1, 1, generator=generator) - 1)
    mean = x.mean((1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean) * bright * gain


def mic_mask(shape: tuple[int, int, int, int], block: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """MIC: (B, 1, H, W) mask, 0 on random `block` x `block` patches (a `ratio` of them), 1 elsewhere."""
    B, _, H, W = shape
    keep = (torch.rand(B, 1, -(-H // block), -(-W // block), generator=generator) > ratio).float()
    return F.interpolate(keep, scale_factor=block, mode="nearest")[..., :H, :W]


def resize_object(mixed_img: torch.Tensor, mixed_lab: torch.Tensor, mixed_w: torch.Tensor,
                  src_img: torch.Tensor, src_lab: torch.Tensor, classmix: torch.Tensor, scale: float,
                  generator: torch.Generator, things: tuple[int, ...] = THING_IDS
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenReMix's Resizing Object (2.4.1). The source image and label are downsampled by `scale` (image
    bilinear, label nearest) onto an empty full-size canvas at a random position; per sample one thing
    class present in the source and not chosen by ClassMix is cut from the canvas and pasted onto the mixed
    image (label = that class, weight 1). Returns the new image, label, weight and the pasted mask."""
    B, _, H, W = src_img.shape
    h, w = max(1, int(round(H * scale))), max(1, int(round(W * scale)))
    small_img = F.interpolate(src_img, size=(h, w), mode="bilinear", align_corners=False)
    small_lab = F.interpolate(src_lab[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
    canvas_img = torch.zeros_like(src_img)
    canvas_lab = torch.full_like(src_lab, IGNORE_ID)
    paste = torch.zeros_like(src_lab, dtype=torch.bool)
    thing_t = torch.tensor(things)
    for b in range(B):
        top = int(torch.randint(0, H - h + 1, (1,), generator=generator))
        left = int(torch.randint(0, W - w + 1, (1,), generator=generator))
        canvas_img[b, :, top:top + h, left:left + w] = small_img[b]
        canvas_lab[b, top:top + h, left:left + w] = small_lab[b]
        present = torch.unique(src_lab[b])
        used = torch.unique(src_lab[b][classmix[b]]) if classmix[b].any() else present[:0]
        cand = present[torch.isin(present, thing_t) & ~torch.isin(present, used)]
        if cand.numel() == 0:
            continue
        cls = cand[int(torch.randint(0, cand.numel(), (1,), generator=generator))]
        paste[b] = canvas_lab[b] == cls
    m = paste[:, None].float()
    new_img = m * canvas_img + (1 - m) * mixed_img
    new_lab = torch.where(paste, canvas_lab, mixed_lab)
    new_w = torch.where(paste, torch.ones_like(mixed_w), mixed_w)
    return new_img, new_lab, new_w, paste


def attach_private(src_img: torch.Tensor, src_lab: torch.Tensor, src_w: torch.Tensor, tgt_img: torch.Tensor,
                   pseudo: torch.Tensor, pseudo_weight: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """OpenReMix's Attaching Private (2.4.2): target pixels pseudo-labelled private are pasted onto the
    source image, labelled 13 with the sample's pseudo-label weight. (Call it only inside the refinement
    windows.)"""
    m = pseudo == PRIVATE_ID
    img = torch.where(m[:, None], tgt_img, src_img)
    lab = torch.where(m, torch.full_like(src_lab, PRIVATE_ID), src_lab)
    w = torch.where(m, pseudo_weight[:, None, None].expand_as(src_w), src_w)
    return img, lab, w


# ------------------------------------------------------------------------------------------------ DECON
def decon_masks(labels: torch.Tensor, kernel: int = 3, iterations: int = 1
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """P = private pixels, E = erode(P), D = dilate(P) (square `kernel`, `iterations` times), C = D and not P
    (the ring of common-class pixels just outside the private region). All (B, H, W) bool. The image border
    counts as outside P for erosion (a region touching the border erodes there)."""
    P = (labels == PRIVATE_ID)
    x = P[:, None].float()
    pad = kernel // 2
    E, D = x, x
    for _ in range(iterations):
        D = F.max_pool2d(D, kernel, 1, pad)
        E = -F.max_pool2d(F.pad(-E, (pad, pad, pad, pad), value=-0.0), kernel, 1, 0)  # zero-padded erosion
    E, D = E[:, 0] > 0.5, D[:, 0] > 0.5
    return P, E, D, D & ~P


def decon_loss(features: torch.Tensor, labels: torch.Tensor, window: int, generator: torch.Generator,
               kernel: int = 3, iterations: int = 1) -> torch.Tensor:
    """DECON (2.5). features (B, C, h, w) decoder features; labels (B, H, W) mixed label map. Masks are made
    at label resolution, downsampled (nearest) to h x w; one random `window` x `window` square (the same for
    the batch) is taken. Anchors = features at E; prototype m = their mean; negatives = features at C;
    logits_i = [cos(a_i, m), cos(a_i, n_1..K)], loss = CE(logits, 0) / batch size. 0 unless P, E, D and C
    are all non-empty inside the window."""
    B, _, h, w = features.shape
    P, E, D, C = decon_masks(labels, kernel, iterations)
    small = [F.interpolate(m[:, None].float(), size=(h, w), mode="nearest")[:, 0] > 0.5 for m in (P, E, D, C)]
    win_h, win_w = min(window, h), min(window, w)
    top = int(torch.randint(0, h - win_h + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - win_w + 1, (1,), generator=generator))
    P, E, D, C = (m[:, top:top + win_h, left:left + win_w] for m in small)
    if not (P.any() and E.any() and D.any() and C.any()):
        return features.sum() * 0.0
    f = features[:, :, top:top + win_h, left:left + win_w].permute(0, 2, 3, 1)
    raw_anchors = f[E]                                        # (N, C)
    proto = F.normalize(raw_anchors.mean(0), dim=0)           # prototype: mean of the E features
    anchors, negatives = F.normalize(raw_anchors, dim=-1), F.normalize(f[C], dim=-1)  # (N, C), (K, C)
    logits = torch.cat([anchors @ proto[:, None], anchors @ negatives.T], 1)  # (N, 1 + K)
    target = torch.zeros(anchors.shape[0], dtype=torch.long, device=features.device)
    return F.cross_entropy(logits, target) / B
