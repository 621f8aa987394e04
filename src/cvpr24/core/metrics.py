"""Image-quality metrics shared by the papers.

PSNR and SSIM follow scikit-image's definitions (as the papers' official code does); LPIPS uses the
`lpips` package, whose AlexNet backbone weights come from torchvision's model hub. Nothing is downloaded
here: LPIPS is computed only when those weights are already in the local torch cache, and otherwise the
metric is reported as unavailable, with the reason, never as a number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def psnr(prediction: np.ndarray, reference: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB of `prediction` against `reference` (same shape, any channel count)."""
    _check_pair(prediction, reference)
    return float(
        peak_signal_noise_ratio(
            reference.astype(np.float64), prediction.astype(np.float64), data_range=data_range
        )
    )


def ssim(prediction: np.ndarray, reference: np.ndarray, data_range: float = 255.0) -> float:
    """SSIM with scikit-image defaults (7x7 uniform window); H x W x C arrays, channel axis last."""
    _check_pair(prediction, reference)
    pred = prediction.astype(np.float64)
    ref = reference.astype(np.float64)
    if pred.ndim == 3 and pred.shape[2] == 1:
        pred, ref = pred[..., 0], ref[..., 0]
    channel_axis = 2 if pred.ndim == 3 else None
    return float(structural_similarity(ref, pred, data_range=data_range, channel_axis=channel_axis))


def _check_pair(prediction: np.ndarray, reference: np.ndarray) -> None:
    if prediction.shape != reference.shape:
        raise ValueError(f"metric inputs differ in shape: {prediction.shape} vs {reference.shape}")
    if not np.isfinite(prediction).all():
        raise ValueError("metric input contains NaN or inf values")


@dataclass(frozen=True)
class Unavailable:
    """A metric that could not be computed, and why. Rendered in tables instead of a number."""

    reason: str

    def __str__(self) -> str:
        return f"unavailable: {self.reason}"


LPIPS_ALEX_FILE = "alexnet-owt-7be5be79.pth"


def lpips_weights_path() -> Path:
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_ALEX_FILE


def lpips_available() -> Unavailable | None:
    """None when LPIPS(alex) can run offline, else the reason it cannot."""
    path = lpips_weights_path()
    if not path.is_file():
        return Unavailable(
            f"LPIPS needs torchvision's AlexNet weights at {path}; they cannot be downloaded here "
            "(copy the file there to enable LPIPS)"
        )
    return None


_LPIPS_MODEL = None


def lpips_distance(prediction: np.ndarray, reference: np.ndarray, data_range: float = 255.0) -> float | Unavailable:
    """LPIPS (AlexNet) distance, or `Unavailable` when its backbone weights are not cached locally."""
    missing = lpips_available()
    if missing is not None:
        return missing
    import lpips
    import torch

    global _LPIPS_MODEL
    if _LPIPS_MODEL is None:
        _LPIPS_MODEL = lpips.LPIPS(net="alex", verbose=False).eval()

    def to_tensor(img: np.ndarray) -> torch.Tensor:
        arr = img.astype(np.float32) / data_range * 2 - 1
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        return torch.from_numpy(arr).permute(2, 0, 1)[None]

    with torch.no_grad():
        return float(_LPIPS_MODEL(to_tensor(prediction), to_tensor(reference)).item())
