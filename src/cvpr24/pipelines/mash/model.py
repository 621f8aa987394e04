"""MASH's model and method pieces: the U-Net, masking, the blind-spot loss, ensemble inference, the
noise-level estimate and the rule that picks tau, and local pixel shuffling (LPS).

Tensors are (1, C, H, W) in [0, 1] unless a docstring says otherwise. Mask convention: 1 = visible,
0 = hidden, P(hidden) = tau, drawn per pixel *and* per channel (as the official code draws them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------- network


def _conv(cin: int, cout: int, act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1)]
    if act:
        layers.append(nn.LeakyReLU(0.1))
    return layers


class UNetN2N(nn.Module):
    """The Noise2Noise-style U-Net of the official code (0.99 M parameters at width 48, RGB).

    Encoder: five poolings of `width` channels; decoder: `2 * width` channels with skip concatenations;
    the last block sees the input again and ends in a linear 3x3 conv. H and W must be multiples of 32.
    """

    def __init__(self, in_channels: int = 3, width: int = 48):
        super().__init__()
        w, d, c = width, 2 * width, in_channels
        pool, up = nn.MaxPool2d(2), nn.Upsample(scale_factor=2, mode="nearest")
        self.enc1 = nn.Sequential(*_conv(c, w), *_conv(w, w), pool)
        self.enc2 = nn.Sequential(*_conv(w, w), pool)
        self.enc3 = nn.Sequential(*_conv(w, w), pool)
        self.enc4 = nn.Sequential(*_conv(w, w), pool)
        self.enc5 = nn.Sequential(*_conv(w, w), pool, *_conv(w, w), up)
        self.dec1 = nn.Sequential(*_conv(2 * w, d), *_conv(d, d), up)
        self.dec2 = nn.Sequential(*_conv(d + w, d), *_conv(d, d), up)
        self.dec3 = nn.Sequential(*_conv(d + w, d), *_conv(d, d), up)
        self.dec4 = nn.Sequential(*_conv(d + w, d), *_conv(d, d), up)
        self.dec5 = nn.Sequential(*_conv(d + c, 64), *_conv(64, 32), *_conv(32, c, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"UNetN2N needs H and W that are multiples of 32 (five 2x2 poolings), got {h}x{w}")
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        e4 = self.enc4(e3)
        y = self.enc5(e4)
        y = self.dec1(torch.cat([y, e4], 1))
        y = self.dec2(torch.cat([y, e3], 1))
        y = self.dec3(torch.cat([y, e2], 1))
        y = self.dec4(torch.cat([y, e1], 1))
        return self.dec5(torch.cat([y, x], 1))


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def conv_macs(net: nn.Module, height: int, width: int) -> int:
    """Multiply-accumulates of one forward pass (convolutions only; 1 MAC counted as 1 FLOP, as the
    paper's Table 5 does), measured by running the network once on a zero input of that size.

    For 256x256x3 at width 48 this counts 11.40 G (the paper reports 11.44 G FLOPs; the 0.3 % gap is
    not explained by biases or pooling, which add far less, and is left as measured).
    """
    total = 0

    def hook(module: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal total
        k = module.kernel_size[0] * module.kernel_size[1]
        total += out.numel() * (module.in_channels // module.groups) * k

    in_ch = next(m for m in net.modules() if isinstance(m, nn.Conv2d)).in_channels
    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            net(torch.zeros(1, in_ch, height, width, device=next(net.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return int(total)


# ------------------------------------------------------------------------------------ masking and loss


def bernoulli_mask(shape: tuple[int, ...], tau: float, generator: torch.Generator) -> torch.Tensor:
    """Float mask, 1 = visible, 0 = hidden with probability `tau`, i.i.d. per pixel and channel."""
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"masking ratio tau must be in [0, 1), got {tau}")
    return (torch.rand(shape, generator=generator) >= tau).float()


def masked_loss(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """Blind-spot loss on hidden entries only, normalised like the official code: the sum over hidden
    entries divided by *all* H*W*C entries (`L1Loss(reduction='mean')` on masked tensors)."""
    diff = (1.0 - mask) * (output - target)
    if kind == "l1":
        return diff.abs().mean()
    if kind == "l2":
        return (diff**2).mean()
    raise ValueError(f"loss must be 'l1' or 'l2', got {kind!r}")


@torch.no_grad()
def ensemble_predict(net: nn.Module, y: torch.Tensor, tau: float, k: int, generator: torch.Generator) -> torch.Tensor:
    """Eq. 11: the mean of `net(m_p * y)` over `k` fresh masks."""
    acc = torch.zeros_like(y)
    for _ in range(int(k)):
        mask = bernoulli_mask(tuple(y.shape), tau, generator).to(y.device)
        acc += net(mask * y)
    return acc / int(k)


def noise_std_255(prediction: torch.Tensor, y: torch.Tensor) -> float:
    """sigma_hat of Eq. 8 as the code computes it: std (mean removed) of 255 * (prediction - y)."""
    diff = (255.0 * prediction.detach().cpu().double()) - (255.0 * y.detach().cpu().double())
    return float(np.std(diff.numpy()))


@dataclass(frozen=True)
class SelectionRule:
    """Eq. 10: pick tau (and LPS) from epsilon = |sigma_hat(0.8) - sigma_hat(0.2)| (grey levels)."""

    tau_high: float = 0.8
    tau_medium: float = 0.5
    tau_low: float = 0.2
    eps_low: float = 1.5
    eps_high: float = 2.5

    def select(self, epsilon: float) -> tuple[float, bool]:
        if epsilon > self.eps_high:
            return self.tau_high, True
        if epsilon < self.eps_low:
            return self.tau_low, False
        return self.tau_medium, False


# ------------------------------------------------------------------------------ local pixel shuffling


def blockwise_std(image: torch.Tensor, block: int = 2) -> torch.Tensor:
    """Population std over non-overlapping `block` x `block` blocks, broadcast back to (H, W)."""
    h, w = image.shape
    if h % block or w % block:
        raise ValueError(f"blockwise_std: block {block} must divide the image size {h}x{w}")
    x = image[None, None].double()
    mean = F.interpolate(F.avg_pool2d(x, block), scale_factor=block, mode="nearest")
    var = F.interpolate(F.avg_pool2d((x - mean) ** 2, block), scale_factor=block, mode="nearest")
    return var.sqrt()[0, 0].to(image.dtype)


def texture_map(pseudo_clean_255: torch.Tensor, block: int, rel_threshold: float) -> torch.Tensor:
    """Bool (H, W): textured where the block std of the channel-mean pseudo-clean image is at least
    `rel_threshold` times its maximum (the official code's relative lambda)."""
    std = blockwise_std(pseudo_clean_255.float().mean(0), block)
    peak = float(std.max())
    if peak <= 0:
        return torch.zeros_like(std, dtype=torch.bool)
    return (std / peak) >= rel_threshold


def flat_tiles(texture: torch.Tensor, tile: int) -> torch.Tensor:
    """Bool (ceil(H/tile), ceil(W/tile)): True for complete tiles with no textured pixel. Partial border
    tiles (when `tile` does not divide H or W) are never flat, so they are never shuffled."""
    h, w = texture.shape
    nh, nw = -(-h // tile), -(-w // tile)
    flat = torch.zeros(nh, nw, dtype=torch.bool)
    fh, fw = h // tile, w // tile
    if fh and fw:
        core = texture[: fh * tile, : fw * tile].reshape(fh, tile, fw, tile)
        flat[:fh, :fw] = ~core.any(dim=3).any(dim=1)
    return flat


def shuffle_tiles(y: torch.Tensor, flat: torch.Tensor, tile: int, generator: torch.Generator) -> torch.Tensor:
    """Permute the pixels inside every flat tile of y (C, H, W): one random permutation per tile, the same
    for all channels; other tiles are left bit-identical. Vectorised over tiles."""
    c, h, w = y.shape
    fh, fw = h // tile, w // tile
    out = y.clone()
    if fh == 0 or fw == 0:
        return out
    core = y[:, : fh * tile, : fw * tile]
    tiles = core.reshape(c, fh, tile, fw, tile).permute(0, 1, 3, 2, 4).reshape(c, fh * fw, tile * tile)
    perm = torch.argsort(torch.rand(fh * fw, tile * tile, generator=generator), dim=1)
    shuffled = torch.gather(tiles, 2, perm[None].expand(c, -1, -1))
    sel = flat[:fh, :fw].reshape(-1)
    tiles = torch.where(sel[None, :, None], shuffled, tiles)
    out[:, : fh * tile, : fw * tile] = (
        tiles.reshape(c, fh, fw, tile, tile).permute(0, 1, 3, 2, 4).reshape(c, fh * tile, fw * tile)
    )
    return out


def lps_target(
    y: torch.Tensor,
    pseudo_clean_255: torch.Tensor,
    *,
    tile: int,
    block: int,
    rel_threshold: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, float]:
    """Eq. 5-7: the noisy image y (C, H, W) shuffled inside the tiles that are flat in the pseudo-clean
    image; returns it and the fraction of complete tiles that were shuffled."""
    texture = texture_map(pseudo_clean_255, block, rel_threshold)
    flat = flat_tiles(texture, tile)
    complete = (y.shape[1] // tile) * (y.shape[2] // tile)
    fraction = float(flat.sum()) / complete if complete else 0.0
    return shuffle_tiles(y, flat, tile, generator), fraction
