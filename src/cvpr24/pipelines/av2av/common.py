"""The rates and sizes every AV2AV module shares, so that audio, video, features and units line up exactly.

An utterance of T video frames (25 fps) holds exactly 640 T audio samples at 16 kHz (synthesis pads the
waveform to a multiple of 640), 4 T filterbank frames at 100 Hz (hop 160), T stacked audio frames at 25 Hz
(stack 4, as AV-HuBERT), 2 T units at 50 Hz (two heads per 25 Hz frame, the official unit extraction) and 2 T
mel frames at 50 Hz (hop 320: one mel frame per unit, the unit vocoder's 20 ms code hop).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LANGS: tuple[str, ...] = ("en", "es", "fr", "it", "pt")
SR = 16_000              # audio sample rate (Hz)
FPS = 25                 # video frame rate
SAMPLES_PER_FRAME = SR // FPS        # 640
FBANK_HOP = 160          # 100 Hz filterbank frames
STACK = 4                # filterbank frames per 25 Hz feature frame
UNIT_HZ = 50             # units per second (two per video frame)
MEL_HOP = 320            # 50 Hz mel frames, one per unit
N_MELS = 80
FACE = 64                # face crop side (pixels)
LIP = 32                 # lip ROI side (grayscale)
LIP_CROP = 28            # centre crop of the lip ROI the unit model sees (96 -> 88 in the paper)
LIP_MEAN, LIP_STD = 0.421, 0.165     # AV-HuBERT's lip normalisation


def dedup(units: Sequence[int] | np.ndarray) -> list[int]:
    """Remove consecutive repeats (the official `process_units`): [5, 5, 3, 3, 3, 5] -> [5, 3, 5]."""
    out: list[int] = []
    for u in units:
        u = int(u)
        if not out or out[-1] != u:
            out.append(u)
    return out


def run_lengths(units: Sequence[int] | np.ndarray) -> tuple[list[int], list[int]]:
    """De-duplicated units and how many frames each covered (the duration predictor's targets)."""
    vals: list[int] = []
    lens: list[int] = []
    for u in units:
        u = int(u)
        if vals and vals[-1] == u:
            lens[-1] += 1
        else:
            vals.append(u)
            lens.append(1)
    return vals, lens
