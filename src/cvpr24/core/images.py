"""Reading image files for the papers' loaders, with errors that name the file and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cvpr24.core.validation import DataValidationError


def read_rgb(path: str | Path, what: str, fix: str) -> np.ndarray:
    """An image file as a uint8 (H, W, 3) array; a file that cannot be decoded raises DataValidationError
    naming `what`, the file and `fix`."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as exc:
        raise DataValidationError(f"{what} {path} cannot be decoded ({exc}); {fix}") from exc
