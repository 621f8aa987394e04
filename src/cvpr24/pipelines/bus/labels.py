"""The open-set label space of BUS (13 common classes + one `private` output) and the id maps of the
real datasets. Train ids 0-12 are the common classes, 13 is `private`, 255 is ignored."""

from __future__ import annotations

import numpy as np

COMMON_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "traffic light", "vegetation", "terrain", "sky",
    "car", "bus", "motorcycle", "bicycle",
)
PRIVATE_ID = 13
IGNORE_ID = 255
NUM_CLASSES = 14  # 13 common + private
CLASS_NAMES: tuple[str, ...] = COMMON_CLASSES + ("private",)
# "thing" classes OpenReMix's resizing-object step may cut and paste: traffic light, car, bus, motorcycle, bicycle
THING_IDS: tuple[int, ...] = (5, 9, 10, 11, 12)
# the six Cityscapes classes that are private in the GTA5 -> Cityscapes open-set protocol
PRIVATE_CLASSES: tuple[str, ...] = ("pole", "traffic sign", "person", "rider", "truck", "train")

# Cityscapes label ids (also used by GTA5's label PNGs) of the 13 common classes, in train-id order
COMMON_LABEL_IDS: tuple[int, ...] = (7, 8, 11, 12, 13, 19, 21, 22, 23, 26, 28, 32, 33)
# Cityscapes label ids of the private classes: pole 17, traffic sign 20, person 24, rider 25, truck 27, train 31
PRIVATE_LABEL_IDS: tuple[int, ...] = (17, 20, 24, 25, 27, 31)


def _lut(private_to: int) -> np.ndarray:
    lut = np.full(256, IGNORE_ID, dtype=np.uint8)
    for train_id, label_id in enumerate(COMMON_LABEL_IDS):
        lut[label_id] = train_id
    for label_id in PRIVATE_LABEL_IDS:
        lut[label_id] = private_to
    return lut


# source protocol: private pixels stay in the image but are unlabelled (255)
SOURCE_LUT: np.ndarray = _lut(IGNORE_ID)
# target evaluation protocol: the six private classes become the single `private` class 13
TARGET_LUT: np.ndarray = _lut(PRIVATE_ID)
