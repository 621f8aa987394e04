"""MASH (Masked and Shuffled Blind Spot Denoising, CVPR 2024): the network and the method's pieces.

Read top to bottom:

1. `UNetN2N`, the Noise2Noise-style U-Net trained from scratch on every noisy image (spec 2.2), with
   `count_parameters` and the analytic `conv_macs`.
2. Blind-spot training: `bernoulli_mask` and `masked_loss` (Eq. 4, official-code normalisation).
3. Inference and adaptive masking: `ensemble_predict` (Eq. 11), `noise_std_255` (Eq. 8 as coded) and
   `SelectionRule` (Eq. 10).
4. Local pixel shuffling (LPS, Eq. 5-7): `blockwise_std` -> `texture_map` -> `flat_tiles` ->
   `shuffle_tiles`, wrapped by `lps_target`.

Conventions: images are torch tensors in [0, 1] shaped (1, C, H, W) unless a docstring says otherwise.
Masks: 1 = visible, 0 = hidden, P(hidden) = tau, drawn i.i.d. per pixel *and* per channel, as the
official code draws them (`torch.rand(1, C, H, W)`). Masked input is `m * y` (hidden entries set to 0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ============================================================================================ network

#: Five 2x2 poolings: H and W of the U-Net input must be multiples of this.
SIZE_MULTIPLE = 32


def _conv(cin: int, cout: int, act: bool = True) -> list[nn.Module]:
    """3x3 convolution (padding 1, with bias), optionally followed by LeakyReLU(0.1)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel_size=3, padding=1)]
    if act:
        layers.append(nn.LeakyReLU(0.1))
    return layers


def _check_size(height: int, width: int) -> None:
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
        raise ValueError(
            f"UNetN2N needs H and W that are multiples of {SIZE_MULTIPLE} (five 2x2 poolings), "
            f"got {height}x{width}"
        )


class UNetN2N(nn.Module):
    """The Noise2Noise-style U-Net of the official code (spec 2.2); 991,203 parameters for RGB, width 48.

    Encoder blocks have `width` channels and end in a 2x2 max-pool; decoder blocks have `2 * width`
    channels, start from a skip concatenation and end in a nearest x2 upsample; the last block sees the
    network input again and ends with a linear 3x3 conv (no output activation, no residual).

    | block | input (channels @ resolution)      | layers                                 |
    |-------|------------------------------------|----------------------------------------|
    | enc1  | C @ H                              | conv C->w, conv w->w, pool             |
    | enc2-4| w @ H/2, H/4, H/8                  | conv w->w, pool                        |
    | enc5  | w @ H/16                           | conv w->w, pool, conv w->w (H/32), up  |
    | dec1  | cat(enc5, enc4) = 2w @ H/16        | conv 2w->d, conv d->d, up              |
    | dec2-4| cat(prev, skip) = d+w @ H/8,4,2    | conv d+w->d, conv d->d, up             |
    | dec5  | cat(dec4, x) = d+C @ H             | conv ->64, conv 64->32, conv 32->C     |

    Weights keep PyTorch's default initialisation (the official He-init helper is commented out).
    """

    #: Resolution divisor of each block's input; used by `conv_macs` to walk the layers analytically.
    BLOCK_INPUT_SCALE: dict[str, int] = {
        "enc1": 1, "enc2": 2, "enc3": 4, "enc4": 8, "enc5": 16,
        "dec1": 16, "dec2": 8, "dec3": 4, "dec4": 2, "dec5": 1,
    }  # fmt: skip

    def __init__(self, in_channels: int = 3, width: int = 48):
        super().__init__()
        c, w, d = in_channels, width, 2 * width
        self.in_channels = in_channels
        self.width = width
        pool = nn.MaxPool2d(2)
        up = nn.Upsample(scale_factor=2, mode="nearest")
        self.enc1 = nn.Sequential(*_conv(c, w), *_conv(w, w), pool)
        self.enc2 = nn.Sequential(*_conv(w, w), pool)
        self.enc3 = nn.Sequential(*_conv(w, w), pool)
        self.enc4 = nn.Sequential(*_conv(w, w), pool)
        self.enc5 = nn.Sequential(*_conv(w, w), pool, *_conv(w, w), up)
        self.dec1 = nn.Sequential(*_conv(w + w, d), *_conv(d, d), up)
        self.dec2 = nn.Sequential(*_conv(d + w, d), *_conv(d, d), up)
        self.dec3 = nn.Sequential(*_conv(d + w, d), *_conv(d, d), up)
        self.dec4 = nn.Sequential(*_conv(d + w, d), *_conv(d, d), up)
        self.dec5 = nn.Sequential(*_conv(d + c, 64), *_conv(64, 32), *_conv(32, c, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_size(*x.shape[-2:])
        e1 = self.enc1(x)  # w   @ H/2
        e2 = self.enc2(e1)  # w   @ H/4
        e3 = self.enc3(e2)  # w   @ H/8
        e4 = self.enc4(e3)  # w   @ H/16
        h = self.enc5(e4)  # w   @ H/16 (via H/32)
        h = self.dec1(torch.cat([h, e4], dim=1))  # d @ H/8
        h = self.dec2(torch.cat([h, e3], dim=1))  # d @ H/4
        h = self.dec3(torch.cat([h, e2], dim=1))  # d @ H/2
        h = self.dec4(torch.cat([h, e1], dim=1))  # d @ H
        return self.dec5(torch.cat([h, x], dim=1))  # C @ H


def count_parameters(net: nn.Module) -> int:
    """Number of parameters (weights and biases) of `net`."""
    return sum(p.numel() for p in net.parameters())


def conv_macs(net: UNetN2N, height: int, width: int) -> int:
    """Analytic multiply-accumulate count of one forward pass on a (1, C, height, width) input.

    Convolutions only (bias adds, activations, pooling and upsampling are not counted); a conv producing
    `cout` maps of size h x w from `cin` maps costs h * w * cout * cin * kh * kw / groups MACs. The
    resolution of every conv is found by walking each block from its input scale: a pool halves it, an
    upsample doubles it. The paper's Table 5 counts 1 MAC as 1 FLOP, and so do we.

    For 256x256x3 at width 48 this gives 11,399,675,904 MACs = 11.40 G; the paper's Table 5 says
    11.44 G FLOPs. We report our count as is. (Observation, not used: adding one op per bias add,
    18.0 M, and one per LeakyReLU output, 17.8 M, would give 11.436 G, which rounds to the paper's value,
    so their profiler may have counted those too; unverified.)
    """
    _check_size(height, width)
    total = 0
    for name, scale in UNetN2N.BLOCK_INPUT_SCALE.items():
        h, w = height // scale, width // scale
        for layer in getattr(net, name):
            if isinstance(layer, nn.MaxPool2d):
                h, w = h // 2, w // 2
            elif isinstance(layer, nn.Upsample):
                h, w = h * 2, w * 2
            elif isinstance(layer, nn.Conv2d):  # stride 1, "same" padding: output size = input size
                kh, kw = layer.kernel_size
                total += h * w * layer.out_channels * (layer.in_channels // layer.groups) * kh * kw
    return total


# ================================================================================ masking and loss


def bernoulli_mask(shape: tuple[int, ...], tau: float, generator: torch.Generator) -> torch.Tensor:
    """Float mask of `shape` (on the generator's device): 1 = visible, 0 = hidden with probability
    `tau`, drawn i.i.d. per element, i.e. per pixel *and* per channel."""
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"masking ratio tau must be in [0, 1), got {tau}")
    u = torch.rand(shape, generator=generator, device=generator.device)
    return (u >= tau).float()


def masked_loss(
    output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, kind: str = "l1"
) -> torch.Tensor:
    """Blind-spot loss (Eq. 4) on hidden entries only, normalised as in the official code: the sum of
    |(1 - m) * (output - target)| (l1) or its square (l2) divided by *all* H*W*C entries, which is what
    `nn.L1Loss(reduction='mean')((1 - m) * out, (1 - m) * t)` computes. The paper writes l2; the released
    numbers come from l1."""
    diff = (1.0 - mask) * (output - target)
    if kind == "l1":
        return diff.abs().mean()
    if kind == "l2":
        return diff.square().mean()
    raise ValueError(f"unknown loss kind {kind!r}: expected 'l1' or 'l2'")


# ======================================================================= inference and adaptive masking


@torch.no_grad()
def ensemble_predict(
    net: nn.Module | Callable[[torch.Tensor], torch.Tensor],
    y: torch.Tensor,
    tau: float,
    k: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Eq. 11: x_hat = (1/k) * sum_p net(m_p * y) over `k` fresh Bernoulli masks with ratio `tau`.

    The network stays in whatever mode it is in (it has no dropout or batch norm, so it does not matter).
    """
    if k < 1:
        raise ValueError(f"need at least one prediction, got k={k}")
    acc = torch.zeros_like(y)
    for _ in range(k):
        mask = bernoulli_mask(tuple(y.shape), tau, generator).to(y)
        acc += net(mask * y)
    return acc / k


def noise_std_255(prediction: torch.Tensor, y: torch.Tensor) -> float:
    """sigma_hat (Eq. 8) as the official code computes it: `numpy.std(255 * prediction - 255 * y)` over
    all pixels and channels (mean removed), in 8-bit grey levels."""
    pred = prediction.detach().cpu().double().numpy()
    noisy = y.detach().cpu().double().numpy()
    return float(np.std(255.0 * pred - 255.0 * noisy))


@dataclass(frozen=True)
class SelectionRule:
    """Eq. 10: choose the masking ratio, and whether to use LPS, from the correlation proxy
    epsilon = |sigma_hat(0.8) - sigma_hat(0.2)| (in 0-255 grey levels). Defaults are the paper's values;
    the official configs use 0.9 / 0.5 / 0.1 and eps 1.0 / 2.0."""

    tau_high: float = 0.8
    tau_medium: float = 0.5
    tau_low: float = 0.2
    eps_low: float = 1.5
    eps_high: float = 2.5

    def select(self, epsilon: float) -> tuple[float, bool]:
        """Return (tau, use_lps): strongly correlated noise -> high masking with LPS, nearly i.i.d.
        noise -> low masking, otherwise the medium ratio. Ties fall into the medium band (the code's
        strict comparisons; the paper writes `<=` for the low band)."""
        if epsilon > self.eps_high:
            return self.tau_high, True
        if epsilon < self.eps_low:
            return self.tau_low, False
        return self.tau_medium, False


# ============================================================================== local pixel shuffling


def blockwise_std(image: torch.Tensor, block: int = 2) -> torch.Tensor:
    """Population std of `image` (H, W) over non-overlapping `block` x `block` blocks, as an (H, W) map
    that is constant inside each block.

    Box mean per block (a stride-`block` box filter, here `avg_pool2d`), nearest upsample back, box mean
    of the squared deviation over the same blocks, upsample, sqrt. Computed in float64.
    """
    if image.dim() != 2:
        raise ValueError(f"blockwise_std expects an (H, W) image, got shape {tuple(image.shape)}")
    h, w = image.shape
    if block < 1 or h % block or w % block:
        raise ValueError(f"std block {block} must divide the image size {h}x{w}")
    x = image.double()[None, None]
    mean = F.interpolate(F.avg_pool2d(x, block), scale_factor=block, mode="nearest")
    var = F.interpolate(F.avg_pool2d((x - mean) ** 2, block), scale_factor=block, mode="nearest")
    return var.sqrt()[0, 0].to(image.dtype if image.is_floating_point() else torch.float32)


def texture_map(pseudo_clean_255: torch.Tensor, block: int, rel_threshold: float) -> torch.Tensor:
    """Bool (H, W) texture map T of the pseudo-clean image (C, H, W) in 0-255.

    Following the code: average the channels first, take the blockwise std, and mark as textured where
    `std / max(std) >= rel_threshold` (lambda is relative to the image maximum; the paper's flat set of
    Eq. 7 is the complement). An image with no texture at all (max std 0) has no textured pixel.
    """
    grey = pseudo_clean_255.float()
    if grey.dim() == 3:
        grey = grey.mean(dim=0)
    std = blockwise_std(grey, block)
    peak = std.max()
    if float(peak) <= 0.0:
        return torch.zeros_like(std, dtype=torch.bool)
    return (std / peak) >= rel_threshold


def flat_tiles(texture: torch.Tensor, tile: int) -> torch.Tensor:
    """Bool (ceil(H/tile), ceil(W/tile)) map over tiles of the (H, W) texture map: True where the tile is
    complete and contains no textured pixel. Partial border tiles (when `tile` does not divide H or W)
    are never flat, so they are never shuffled."""
    h, w = texture.shape
    flat = torch.zeros(-(-h // tile), -(-w // tile), dtype=torch.bool, device=texture.device)
    fh, fw = h // tile, w // tile
    if fh and fw:
        core = texture[: fh * tile, : fw * tile].reshape(fh, tile, fw, tile)
        flat[:fh, :fw] = ~core.any(dim=3).any(dim=1)
    return flat


def shuffle_tiles(y: torch.Tensor, flat: torch.Tensor, tile: int, generator: torch.Generator) -> torch.Tensor:
    """Gamma(y) of Eq. 5 restricted to flat tiles: y (C, H, W) with the pixels of every flat tile permuted.

    One permutation per tile (argsort of uniform noise from `generator`, drawn for every complete tile so
    the draw does not depend on which tiles are flat), applied identically to all channels so a pixel's
    colour moves as a whole. Non-flat tiles and partial border strips are returned bit-identical.
    """
    c, h, w = y.shape
    fh, fw = h // tile, w // tile
    out = y.clone()
    if fh == 0 or fw == 0:
        return out
    n, s2 = fh * fw, tile * tile
    # (C, fh*tile, fw*tile) -> (C, n_tiles, tile*tile), tiles in row-major order.
    tiles = (
        y[:, : fh * tile, : fw * tile].reshape(c, fh, tile, fw, tile).permute(0, 1, 3, 2, 4).reshape(c, n, s2)
    )
    noise = torch.rand(n, s2, generator=generator, device=generator.device)
    perm = noise.argsort(dim=1).to(y.device)
    shuffled = tiles.gather(2, perm.unsqueeze(0).expand(c, n, s2))
    selected = flat[:fh, :fw].reshape(1, n, 1).to(y.device)
    tiles = torch.where(selected, shuffled, tiles)
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
    """The LPS training target (Eq. 5-7): the noisy image y (C, H, W) in [0, 1] shuffled inside the tiles
    that are flat in the pseudo-clean image (C, H, W) in 0-255. Returns (y_shuffled, fraction of the
    complete tiles that were shuffled)."""
    texture = texture_map(pseudo_clean_255, block, rel_threshold)
    flat = flat_tiles(texture, tile)
    complete = (y.shape[-2] // tile) * (y.shape[-1] // tile)
    fraction = float(flat.sum()) / complete if complete else 0.0
    return shuffle_tiles(y, flat, tile, generator), fraction
