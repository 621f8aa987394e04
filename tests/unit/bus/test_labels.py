"""The open-set label space (spec 2.1): GTA5/Cityscapes label ids -> 13 common train ids, private -> 255 in the
source and -> 13 in the target evaluation set."""

import numpy as np

from cvpr24.pipelines.bus.labels import (
    CLASS_NAMES,
    IGNORE_ID,
    PRIVATE_ID,
    SOURCE_LUT,
    TARGET_LUT,
    THING_IDS,
)

COMMON = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 19: 5, 21: 6, 22: 7, 23: 8, 26: 9, 28: 10, 32: 11, 33: 12}
PRIVATE = (17, 20, 24, 25, 27, 31)  # pole, traffic sign, person, rider, truck, train


def test_common_ids_map_to_train_ids_in_both_protocols():
    for label_id, train_id in COMMON.items():
        assert SOURCE_LUT[label_id] == train_id
        assert TARGET_LUT[label_id] == train_id


def test_private_ids_are_ignored_in_source_and_private_in_target():
    for label_id in PRIVATE:
        assert SOURCE_LUT[label_id] == IGNORE_ID
        assert TARGET_LUT[label_id] == PRIVATE_ID == 13


def test_everything_else_is_ignored():
    other = [i for i in range(256) if i not in COMMON and i not in PRIVATE]
    assert (SOURCE_LUT[other] == IGNORE_ID).all() and (TARGET_LUT[other] == IGNORE_ID).all()


def test_class_names_and_things():
    assert len(CLASS_NAMES) == 14 and CLASS_NAMES[13] == "private"
    assert [CLASS_NAMES[i] for i in THING_IDS] == ["traffic light", "car", "bus", "motorcycle", "bicycle"]


def test_lut_applies_to_a_whole_map():
    lab = np.array([[7, 24, 0], [33, 31, 26]], np.uint8)
    assert SOURCE_LUT[lab].tolist() == [[0, 255, 255], [12, 255, 9]]
    assert TARGET_LUT[lab].tolist() == [[0, 13, 255], [12, 13, 9]]
