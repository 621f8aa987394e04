"""Seeds and stable derived seeds.

Every random draw in a pipeline comes from a generator seeded by `derive_seed(global_seed, *keys)`, so a
job's result depends only on its own key, never on the order in which jobs ran or on how many worker
processes shared them.
"""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import torch


def derive_seed(seed: int, *keys: object) -> int:
    """A 31-bit seed from a base seed and any keys (stable across processes and Python versions)."""
    text = "|".join([str(int(seed)), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global generators (for code that does not take a generator)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def torch_generator(seed: int) -> torch.Generator:
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    return gen
