"""Backbone pretraining: the offline stand-in for the paper's ImageNet-22K Swin-B (spec 7).

MagNet starts from a pretrained image encoder and a pretrained BERT; nothing can be downloaded here, and the
spec's substitute, a tiny encoder trained from scratch on the referring loss alone, does not learn to tell the
four ShapeRef shapes apart within the embedded budget (pipelines/magnet/README.md, "Why the backbone is
pretrained": swapping the shape word of a test expression leaves its prediction unchanged). So before the
referring jobs, the image encoder alone is trained once on a dense labelling task on procedural images:

* data: `n_images` fresh ShapeRef scenes drawn with their own seed (`derive_seed(seed, "pretrain-data")`), so
  none is an image of the referring splits; every object's mask with its shape and its colour. No expression,
  no referred object: the task is "what is at this pixel", as ImageNet's labels are "what is in this image";
* head: a 1x1 convolution on the four stage outputs resized to the stride-4 grid, predicting per pixel the shape
  (background + 4) and the colour (background + 5), upsampled to the image; loss = the two cross-entropies;
* AdamW with a one-cycle schedule (10 % warm-up), batches drawn with a seeded generator; resumable like every job.

The head is discarded; every referring job (all configs, all seeds) starts from the same encoder weights, as the
paper's ablations all start from one Swin checkpoint. `evaluate_pretrained` reports the foreground shape and
colour accuracy on `n_eval` further images (another seed), so the report shows what the backbone knows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cvpr24.core.seeding import derive_seed, torch_generator
from cvpr24.core.training import Checkpointer, TrainState, train_loop
from cvpr24.pipelines.magnet import data as D
from cvpr24.pipelines.magnet import model as M

PREFIX = "encoder.image."   # where the encoder's weights live in MagNet's state dict
N_SHAPE, N_COLOUR = 1 + len(D.SHAPES), 1 + len(D.COLOURS)


def dense_labels(scenes: list[D.Scene]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images (n, S, S, 3) uint8, shape labels (n, S, S) int64 in 0..4, colour labels (n, S, S) int64 in 0..5);
    0 = background, k = SHAPES[k-1] / COLOURS[k-1]."""
    images = np.stack([s.image for s in scenes])
    shape = np.zeros(images.shape[:3], np.int64)
    colour = np.zeros(images.shape[:3], np.int64)
    for k, s in enumerate(scenes):
        for obj, m in zip(s.objects, s.masks, strict=True):
            shape[k][m > 0] = 1 + D.SHAPES.index(obj.shape)
            colour[k][m > 0] = 1 + D.COLOURS.index(obj.colour)
    return images, shape, colour


def scenes_for(n: int, image_size: int, seed: int) -> list[D.Scene]:
    return D.generate_shaperef(image_size=image_size, n_train=n, n_val=0, n_testA=0, n_testB=0, seed=seed)


class DenseHead(nn.Module):
    """The four stage outputs resized to the first stage's grid, concatenated, 1x1 conv to shape + colour logits,
    bilinearly upsampled to the image."""

    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.proj = nn.Conv2d(sum(dims), N_SHAPE + N_COLOUR, 1)

    def forward(self, ys: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        grid = ys[0].shape[-2:]
        f = torch.cat([y if y.shape[-2:] == grid else F.interpolate(y, size=grid, mode="bilinear", align_corners=False)
                       for y in ys], 1)
        return F.interpolate(self.proj(f), size=size, mode="bilinear", align_corners=False)


class _Pretrainer(nn.Module):
    def __init__(self, mcfg: M.MagNetConfig) -> None:
        super().__init__()
        self.encoder = M.ImageEncoder(mcfg.dims, mcfg.blocks, mcfg.conv_kernel, mcfg.encoder, mcfg.stem_width)
        self.head = DenseHead(mcfg.dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x), tuple(x.shape[-2:]))


def _loss(logits: torch.Tensor, shape: torch.Tensor, colour: torch.Tensor) -> tuple[torch.Tensor, ...]:
    ls = F.cross_entropy(logits[:, :N_SHAPE], shape)
    lc = F.cross_entropy(logits[:, N_SHAPE:], colour)
    return ls + lc, ls, lc


def pretrain_encoder(mcfg: M.MagNetConfig, pcfg: dict[str, Any], seed: int, checkpointer: Checkpointer | None = None,
                     progress: bool = False) -> dict[str, Any]:
    """Train the image encoder on dense shape + colour labels; returns {"state": encoder weights under PREFIX,
    "history": [...], "accuracy": {...}}. pcfg: steps, batch, lr, weight_decay, n_images, n_eval."""
    from cvpr24.pipelines.magnet.method import to_input

    steps, batch = int(pcfg["steps"]), int(pcfg["batch"])
    images, shape, colour = dense_labels(scenes_for(int(pcfg["n_images"]), mcfg.image_size,
                                                    derive_seed(seed, "pretrain-data")))
    torch.manual_seed(derive_seed(seed, "pretrain-init"))
    net = _Pretrainer(mcfg)
    opt = torch.optim.AdamW(net.parameters(), lr=float(pcfg["lr"]), weight_decay=float(pcfg.get("weight_decay", 1e-2)))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(pcfg["lr"]), total_steps=max(steps, 1),
                                                pct_start=0.1)
    gen = torch_generator(derive_seed(seed, "pretrain-order"))

    def step_fn(step: int) -> dict[str, float]:
        sel = torch.randint(0, len(images), (batch,), generator=gen).numpy()
        net.train()
        total, ls, lc = _loss(net(to_input(images[sel])), torch.from_numpy(shape[sel]), torch.from_numpy(colour[sel]))
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return {"total": float(total.detach()), "shape": float(ls.detach()), "colour": float(lc.detach())}

    history = train_loop(model=net, optimizer=opt, step_fn=step_fn, n_steps=steps, scheduler=sched,
                         state=TrainState(generators={"order": gen}), checkpointer=checkpointer,
                         every=int(pcfg.get("checkpoint_every", 100)), log_every=int(pcfg.get("log_every", 10)),
                         desc="magnet: backbone pretraining", progress=progress)
    accuracy = evaluate_pretrained(net, mcfg, int(pcfg.get("n_eval", 256)), seed)
    return {"state": {PREFIX + k: v for k, v in net.encoder.state_dict().items()}, "history": history,
            "accuracy": accuracy}


@torch.no_grad()
def evaluate_pretrained(net: _Pretrainer, mcfg: M.MagNetConfig, n: int, seed: int) -> dict[str, float]:
    """Foreground pixel accuracy (%) of the shape and colour labels on `n` images of another seed."""
    from cvpr24.pipelines.magnet.method import to_input

    if n <= 0:
        return {}
    images, shape, colour = dense_labels(scenes_for(n, mcfg.image_size, derive_seed(seed, "pretrain-eval")))
    net.eval()
    hit_s = hit_c = count = 0
    for a in range(0, n, 64):
        logits = net(to_input(images[a:a + 64]))
        fg = torch.from_numpy(shape[a:a + 64] > 0)
        hit_s += int((logits[:, :N_SHAPE].argmax(1) == torch.from_numpy(shape[a:a + 64]))[fg].sum())
        hit_c += int((logits[:, N_SHAPE:].argmax(1) == torch.from_numpy(colour[a:a + 64]))[fg].sum())
        count += int(fg.sum())
    return {"pretrain_shape_acc": 100.0 * hit_s / max(count, 1), "pretrain_colour_acc": 100.0 * hit_c / max(count, 1),
            "pretrain_n_eval": float(n)}
