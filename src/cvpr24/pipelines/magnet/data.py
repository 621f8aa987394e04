"""MagNet data: the word-level vocabulary and tokenizer, the embedded "ShapeRef" referring dataset (spec Sec.
8.1), its writer in the real REFER format, and the one REFER loader that reads both the embedded and the real
RefCOCO / RefCOCO+ / G-Ref data (spec Sec. 3).

On-disk layout (REFER / LAVT convention, `data_root` = LAVT's `--refer_data_root`):

    <data_root>/images/mscoco/images/train2014/COCO_train2014_<id:012d>.jpg     real images (COCO_IMAGE_DIR)
    <data_root>/images/shaperef/shaperef_<image_id:06d>.png                     embedded images (EMBEDDED_IMAGE_DIR)
    <data_root>/<dataset>/instances.json       COCO: images [{id, file_name, height, width}], annotations
                                               [{id, image_id, category_id, segmentation, area, bbox, iscrowd}],
                                               categories [{id, name, supercategory}]
    <data_root>/<dataset>/refs(<split_by>).p   pickle (protocol 2) of a list of refs {ref_id, ann_id, image_id,
                                               category_id, split, sent_ids, sentences [{sent_id, raw, sent,
                                               tokens}], file_name}

The embedded writer adds two keys the real files do not have: `template` ("A" / "R" / "O") in every sentence
and `distractor_ann_id` (another object of the same image, for the MG grounding check) in every ref; the loader
reads them when present ("all" / missing otherwise). The image actually opened is `instances.json`'s
`images[image_id].file_name` (as LAVT does); a real ref's own `file_name` carries an `_<ann_id>` suffix and
names no file.

Masks follow the released loader (LAVT `ReferDataset` + REFER `getMask`): polygons are rasterised with
pycocotools (`frPyObjects` + `decode`), summed over the polygons of an annotation, and the target is
`sum == 1`, so pixels covered by two overlapping polygons of the same object become BACKGROUND (a quirk of the
released code, reproduced on purpose). Images are resized plainly to S x S (PIL bilinear, no aspect keep), masks
with nearest neighbour.

Expressions are tokenized at word level (no BERT WordPiece: the embedded model trains its own text encoder)
and encoded `[CLS] w1 .. wk [SEP] [PAD]..` into `max_tokens` ids (the released loader uses 20).
"""

from __future__ import annotations

import json
import logging
import math
import os
import pickle
import re
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kedro.io import AbstractDataset

from cvpr24.core.datasets import atomic_write_bytes, swap_in_folder
from cvpr24.core.images import read_rgb
from cvpr24.core.ingest import missing_dataset
from cvpr24.core.validation import DataValidationError

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------- constants
SPECIALS = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "[UNK]"]
PAD_ID, CLS_ID, SEP_ID, MASK_ID, UNK_ID = range(5)

COCO_IMAGE_DIR = "images/mscoco/images/train2014"
EMBEDDED_IMAGE_DIR = "images/shaperef"
EMBEDDED_DATASET = "shaperef"
KNOWN_SPLITS = ("train", "val", "test", "testA", "testB", "testC")
SHAPEREF_SPLITS = ("train", "val", "testA", "testB")
REFS_COLUMNS = ["sample_id", "ref_id", "ann_id", "image_id", "split", "sent_id", "sentence", "template",
                "file_name", "distractor_ann_id"]

REFER_FIX = ("download the REFER annotations (github.com/lichengunc/refer: refcoco, refcoco+, refcocog) into "
             "<data_root>/<dataset>/ and the COCO train2014 images into <data_root>/" + COCO_IMAGE_DIR + "/, "
             "and point magnet.data.real in conf/<env>/parameters/magnet.yml at <data_root> "
             "(pipelines/magnet/README.md, Real data)")
EMBEDDED_FIX = ("re-run the embedded ShapeRef generator (delete the embedded data folder and run the ingest "
                "stage again); check magnet.data in conf/<env>/parameters/magnet.yml")
MAX_TOKENS_FIX = ("raise magnet.preprocess.max_tokens or set magnet.preprocess.on_long: truncate in "
                  "conf/<env>/parameters/magnet.yml")


# ------------------------------------------------------------------------------------------- tokenizer
_TOKEN_RE = re.compile(r"[a-z0-9]+")


def tokenize(sentence: str) -> list[str]:
    """Word-level tokens: the sentence lower-cased, split on every character that is not an ASCII letter or
    digit (punctuation and apostrophes separate words and are dropped: "man's" -> ["man", "s"])."""
    return _TOKEN_RE.findall(str(sentence).lower())


class Vocab:
    """A word <-> id map: ids 0..4 are `SPECIALS` ([PAD], [CLS], [SEP], [MASK], [UNK]), then the words in
    alphabetical order. Unknown words map to [UNK]."""

    def __init__(self, words: Iterable[str]):
        words = [str(w) for w in words]
        clash = sorted(set(words) & set(SPECIALS))
        if clash or len(set(words)) != len(words):
            raise ValueError(f"vocabulary words must be unique and not special tokens (clash: {clash})")
        self.itos: list[str] = list(SPECIALS) + words
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}

    @classmethod
    def from_sentences(cls, sentences: Iterable[str], min_count: int = 1) -> Vocab:
        """Every token of `sentences` (via `tokenize`) seen at least `min_count` times, sorted alphabetically
        (independent of sentence order and counts, so the same corpus always gives the same ids)."""
        counts = Counter(tok for s in sentences for tok in tokenize(s))
        return cls(sorted(w for w, c in counts.items() if c >= min_count and w not in SPECIALS))

    @property
    def words(self) -> list[str]:
        """The non-special words in id order (ids 5, 6, ...)."""
        return self.itos[len(SPECIALS):]

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: object) -> bool:
        return word in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def __repr__(self) -> str:
        return f"Vocab({len(self)} ids: {len(SPECIALS)} specials + {len(self.words)} words)"

    def id(self, token: str) -> int:
        """The id of `token` ([UNK] when not in the vocabulary)."""
        return self.stoi.get(token, UNK_ID)

    def ids(self, tokens: Iterable[str]) -> list[int]:
        return [self.stoi.get(t, UNK_ID) for t in tokens]

    def to_json(self) -> str:
        """`{"specials": [...], "words": [...]}` (ids = position in specials + words)."""
        return json.dumps({"specials": list(SPECIALS), "words": self.words})

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        try:
            obj = json.loads(text)
            specials, words = obj["specials"], obj["words"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataValidationError(f"not a MagNet vocabulary JSON ({exc}); re-run the preprocess stage "
                                      f"that writes it") from exc
        if list(specials) != SPECIALS:
            raise DataValidationError(f"vocabulary specials {specials} differ from {SPECIALS}; the file was "
                                      f"written by another tokenizer, re-run the preprocess stage")
        return cls(words)


def encode(sentences: Sequence[str], vocab: Vocab, max_tokens: int = 20, *, on_long: str = "error",
           where: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention masks, both int64 (n, max_tokens): `[CLS] w1 .. wk [SEP]` then [PAD] = 0, with
    attention 1 on CLS..SEP and 0 on padding.

    An expression needing more than `max_tokens` ids (CLS and SEP included):
      * on_long="error": DataValidationError naming the sentence (and `where[i]`, e.g. "ref 12 in
        refs(unc).p", when given) and the fix;
      * on_long="truncate": keep [CLS], the first max_tokens-2 words and [SEP] (the sentence stays
        terminated);
      * on_long="released": the released loader's plain slice `ids[:max_tokens]` ([CLS] + the first
        max_tokens-1 words, NO [SEP]; LAVT `dataset_refer_bert.py`, which MagNet reuses).
    """
    if on_long not in ("error", "truncate", "released"):
        raise ValueError(f"on_long must be 'error', 'truncate' or 'released', got {on_long!r}")
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be >= 2 ([CLS] and [SEP]), got {max_tokens}")
    if where is not None and len(where) != len(sentences):
        raise ValueError(f"where has {len(where)} entries for {len(sentences)} sentences")
    n = len(sentences)
    ids = np.zeros((n, max_tokens), np.int64)
    attn = np.zeros((n, max_tokens), np.int64)
    for k, sentence in enumerate(sentences):
        row = [CLS_ID, *vocab.ids(tokenize(sentence)), SEP_ID]
        if len(row) > max_tokens:
            if on_long == "error":
                loc = f" ({where[k]})" if where is not None else ""
                raise DataValidationError(
                    f"expression {sentence!r}{loc} needs {len(row)} tokens including [CLS]/[SEP], more than "
                    f"max_tokens={max_tokens}: {MAX_TOKENS_FIX}")
            row = row[:max_tokens - 1] + [SEP_ID] if on_long == "truncate" else row[:max_tokens]
        ids[k, :len(row)] = row
        attn[k, :len(row)] = 1
    return ids, attn


# ------------------------------------------------------------------------------------------- ShapeRef
SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = ("red", "green", "blue", "yellow", "purple")
SIZES = ("small", "big")
RELATIONS = ("left of", "right of", "above", "below", "next to")
EXTREMES = ("leftmost", "rightmost", "top", "bottom")
ORDINALS = ("first", "second", "third")
SIDES = ("left", "right")
CATEGORY_IDS = {s: i + 1 for i, s in enumerate(SHAPES)}
COLOUR_RGB = {"red": (0.85, 0.15, 0.15), "green": (0.15, 0.70, 0.20), "blue": (0.15, 0.30, 0.85),
              "yellow": (0.90, 0.85, 0.15), "purple": (0.60, 0.20, 0.75)}
# synonyms used when a spec is written out as words (same meaning; they only widen the vocabulary)
SIZE_WORDS = {"small": ("small", "little"), "big": ("big", "large")}
RELATION_WORDS = {"left of": ("left of", "to the left of"), "right of": ("right of", "to the right of"),
                  "above": ("above", "over"), "below": ("below", "under"), "next to": ("next to", "beside")}
EXTREME_WORDS = {"leftmost": ("leftmost",), "rightmost": ("rightmost",), "top": ("top", "topmost"),
                 "bottom": ("bottom", "lowest")}
# shape extents in units of the object's radius r: circle radius r, square half side 0.9 r, diamond half
# diagonal 1.2 r, upward equilateral triangle with circumradius 1.3 r; BOUND = radius of the enclosing disc
_SQUARE, _DIAMOND, _TRIANGLE = 0.9, 1.2, 1.3
BOUND = {"circle": 1.0, "square": _SQUARE * math.sqrt(2.0), "diamond": _DIAMOND, "triangle": _TRIANGLE}
BIG_PROB = 0.4
_MAX_ATTEMPTS = 500


@dataclass(frozen=True)
class ShapeObject:
    """One object of a ShapeRef image; (cx, cy) in pixels (x right, y down; pixel (i, j) has centre
    (j + 0.5, i + 0.5)), `radius` the r of the shape extents above, `rgb` its jittered colour in [0, 1]."""

    shape: str
    colour: str
    size: str
    cx: float
    cy: float
    radius: float
    rgb: tuple[float, float, float]

    @property
    def bound(self) -> float:
        """Radius of the disc around (cx, cy) that holds every pixel centre of the shape."""
        return BOUND[self.shape] * self.radius


@dataclass
class Scene:
    """One generated ShapeRef image with its objects, their masks and the one referring expression."""

    image_id: int
    ref_id: int
    sent_id: int
    split: str
    file_name: str
    image: np.ndarray                 # (S, S, 3) uint8
    objects: list[ShapeObject]
    masks: np.ndarray                 # (n_objects, S, S) uint8 in {0, 1}, pairwise disjoint
    ann_ids: list[int]                # one per object
    target: int                       # index into objects
    distractor: int                   # index into objects, != target, drawn with the scene's rng
    spec: dict[str, Any]              # the expression as data (see `matches`)
    sentence: str
    template: str = field(default="")  # "A", "R" or "O"

    @property
    def target_ann_id(self) -> int:
        return self.ann_ids[self.target]

    @property
    def distractor_ann_id(self) -> int:
        return self.ann_ids[self.distractor]


def rasterize(obj: ShapeObject, size: int) -> np.ndarray:
    """Binary (size, size) uint8 mask of `obj`: the pixels whose centre lies inside the shape."""
    c = np.arange(size, dtype=np.float64) + 0.5
    dx = c[None, :] - obj.cx
    dy = c[:, None] - obj.cy
    r = obj.radius
    if obj.shape == "circle":
        inside = dx * dx + dy * dy <= r * r
    elif obj.shape == "square":
        inside = (np.abs(dx) <= _SQUARE * r) & (np.abs(dy) <= _SQUARE * r)
    elif obj.shape == "diamond":
        inside = np.abs(dx) + np.abs(dy) <= _DIAMOND * r
    elif obj.shape == "triangle":  # apex up at (0, -R), base at dy = R/2 with half width R*sqrt(3)/2
        big_r = _TRIANGLE * r
        inside = (dy <= big_r / 2) & (math.sqrt(3.0) * np.abs(dx) <= dy + big_r)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")
    return inside.astype(np.uint8)


def _relation(rel: str, objects: Sequence[ShapeObject], i: int, j: int, margin: float) -> bool:
    """Whether object i stands in relation `rel` to the reference object j (see `matches`)."""
    o, r = objects[i], objects[j]
    dx, dy = o.cx - r.cx, o.cy - r.cy
    if rel == "left of":
        return dx < -margin and abs(dx) > abs(dy) + margin
    if rel == "right of":
        return dx > margin and abs(dx) > abs(dy) + margin
    if rel == "above":
        return dy < -margin and abs(dy) > abs(dx) + margin
    if rel == "below":
        return dy > margin and abs(dy) > abs(dx) + margin
    if rel == "next to":
        d = math.hypot(dx, dy)
        return all(d + margin < math.hypot(x.cx - r.cx, x.cy - r.cy)
                   for k, x in enumerate(objects) if k not in (i, j))
    raise ValueError(f"unknown relation {rel!r}")


def matches(spec: Mapping[str, Any], objects: Sequence[ShapeObject]) -> list[int]:
    """Indices of the objects that the expression `spec` describes (a well-formed referring expression of an
    image gives exactly one). Geometry uses object centres (x right, y down) and `m = spec["margin"]` pixels
    (2 px at 64 px, scaled with the image size) so that near-ties never count:

    * A `{"template": "A", "shape", "colour", "size" (None = not named)}`: every object with that shape,
      colour (and size).
    * R `{"template": "R", "shape", "relation", "ref_colour", "ref_shape"}`: "the {shape} {relation} the
      {ref_colour} {ref_shape}". The reference phrase must denote exactly one object j (else no match; "the"
      presupposes uniqueness). Then every object i != j with the shape such that, with dx, dy = centre of i
      minus centre of j:
        - left of: dx < -m and |dx| > |dy| + m   (i lies in the 90-degree cone to the left of j)
        - right of: dx > m and |dx| > |dy| + m;  above: dy < -m and |dy| > |dx| + m;  below: dy > m and
          |dy| > |dx| + m
        - next to: i is j's nearest other object, closer by more than m than every third object.
    * O ordinal `{"template": "O", "kind": "ordinal", "shape", "rank" (0, 1, 2), "side" ("left"/"right")}`:
      "the {first|second|third} {shape} from the {side}": the objects of that shape sorted by cx (ascending
      from the left, descending from the right); the one at `rank`, provided it exists and the first rank+2
      of them are more than m apart in x (otherwise the order is ambiguous: no match).
    * O extreme `{"template": "O", "kind": "extreme", "shape", "extreme", "colour" (None = not named)}`:
      "the {leftmost|rightmost|top|bottom} {colour?} {shape}": among the objects with that shape (and
      colour), the one with the smallest cx / largest cx / smallest cy / largest cy, provided the runner-up
      is more than m further (otherwise no match).
    """
    m = float(spec.get("margin", 2.0))
    t = spec["template"]
    idx = range(len(objects))
    if t == "A":
        return [i for i in idx if objects[i].shape == spec["shape"] and objects[i].colour == spec["colour"]
                and (spec.get("size") is None or objects[i].size == spec["size"])]
    if t == "R":
        refs = [j for j in idx if objects[j].colour == spec["ref_colour"] and objects[j].shape == spec["ref_shape"]]
        if len(refs) != 1:
            return []
        j = refs[0]
        return [i for i in idx if i != j and objects[i].shape == spec["shape"]
                and _relation(spec["relation"], objects, i, j, m)]
    if t == "O" and spec["kind"] == "ordinal":
        sign = 1.0 if spec["side"] == "left" else -1.0
        pool = sorted((sign * objects[i].cx, i) for i in idx if objects[i].shape == spec["shape"])
        rank = int(spec["rank"])
        if rank >= len(pool):
            return []
        if any(pool[k + 1][0] - pool[k][0] <= m for k in range(min(rank + 1, len(pool) - 1))):
            return []
        return [pool[rank][1]]
    if t == "O" and spec["kind"] == "extreme":
        key = {"leftmost": lambda o: o.cx, "rightmost": lambda o: -o.cx, "top": lambda o: o.cy,
               "bottom": lambda o: -o.cy}[spec["extreme"]]
        pool = sorted((key(objects[i]), i) for i in idx if objects[i].shape == spec["shape"]
                      and (spec.get("colour") is None or objects[i].colour == spec["colour"]))
        if not pool or (len(pool) > 1 and pool[1][0] - pool[0][0] <= m):
            return []
        return [pool[0][1]]
    raise ValueError(f"unknown expression spec {dict(spec)!r}")


def _candidates(template: str, objects: Sequence[ShapeObject], t: int,
                margin: float) -> dict[str, list[dict[str, Any]]]:
    """Expression specs of `template` about target t, grouped (A: plain/sized, R: by relation, O: ordinal/
    extreme); not yet checked for uniqueness."""
    o = objects[t]
    out: dict[str, list[dict[str, Any]]] = {}
    if template == "A":
        out["plain"] = [{"template": "A", "shape": o.shape, "colour": o.colour, "size": None}]
        out["sized"] = [{"template": "A", "shape": o.shape, "colour": o.colour, "size": o.size}]
    elif template == "R":
        pairs = Counter((x.colour, x.shape) for x in objects)
        for rel in RELATIONS:
            out[rel] = [{"template": "R", "shape": o.shape, "relation": rel, "ref_colour": x.colour,
                         "ref_shape": x.shape} for j, x in enumerate(objects)
                        if j != t and pairs[(x.colour, x.shape)] == 1]
    elif template == "O":
        out["ordinal"] = [{"template": "O", "kind": "ordinal", "shape": o.shape, "rank": rank, "side": side}
                          for side in SIDES for rank in range(len(ORDINALS))]
        ext = []
        for colour in (None, o.colour):
            pool = [x for x in objects if x.shape == o.shape and (colour is None or x.colour == colour)]
            if len(pool) >= 2:  # "the leftmost red circle" only when there are several red circles
                ext += [{"template": "O", "kind": "extreme", "shape": o.shape, "extreme": e, "colour": colour}
                        for e in EXTREMES]
        out["extreme"] = ext
    else:
        raise ValueError(f"unknown template {template!r}")
    for group in out.values():
        for spec in group:
            spec["margin"] = margin
    return out


def describe(spec: Mapping[str, Any], rng: np.random.Generator) -> str:
    """The expression `spec` in words (synonyms `SIZE_WORDS`, `RELATION_WORDS`, `EXTREME_WORDS` drawn with
    `rng`; they never change the meaning)."""

    def pick(options: Sequence[str]) -> str:
        return options[int(rng.integers(len(options)))]

    t = spec["template"]
    if t == "A":
        size = f"{pick(SIZE_WORDS[spec['size']])} " if spec.get("size") else ""
        return f"the {size}{spec['colour']} {spec['shape']}"
    if t == "R":
        return (f"the {spec['shape']} {pick(RELATION_WORDS[spec['relation']])} the {spec['ref_colour']} "
                f"{spec['ref_shape']}")
    if spec["kind"] == "ordinal":
        return f"the {ORDINALS[spec['rank']]} {spec['shape']} from the {spec['side']}"
    colour = f"{spec['colour']} " if spec.get("colour") else ""
    return f"the {pick(EXTREME_WORDS[spec['extreme']])} {colour}{spec['shape']}"


def _attributes(rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """(shape, colour, size) of 3-5 objects: the target first, then a same-shape/other-colour distractor, a
    same-colour/other-shape distractor, then 0-2 free objects."""
    n = int(rng.integers(3, 6))
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = COLOURS[int(rng.integers(len(COLOURS)))]
    other_c = [c for c in COLOURS if c != colour]
    other_s = [s for s in SHAPES if s != shape]
    attrs = [(shape, colour), (shape, other_c[int(rng.integers(len(other_c)))]),
             (other_s[int(rng.integers(len(other_s)))], colour)]
    attrs += [(SHAPES[int(rng.integers(len(SHAPES)))], COLOURS[int(rng.integers(len(COLOURS)))])
              for _ in range(n - 3)]
    return [(s, c, "big" if rng.random() < BIG_PROB else "small") for s, c in attrs]


def _place(rng: np.random.Generator, attrs: list[tuple[str, str, str]], size: int,
           tries: int = 40) -> list[ShapeObject] | None:
    """Objects at random non-overlapping positions (enclosing discs at least `gap` apart, inside the image),
    largest first; None when one cannot be placed in `tries` draws."""
    k = size / 64.0
    gap = 2.0 * k
    radii = [rng.uniform(9.0, 12.0) * k if sz == "big" else rng.uniform(5.0, 7.0) * k for _, _, sz in attrs]
    order = sorted(range(len(attrs)), key=lambda i: -BOUND[attrs[i][0]] * radii[i])
    placed: dict[int, ShapeObject] = {}
    for i in order:
        shape, colour, sz = attrs[i]
        bound = BOUND[shape] * radii[i]
        rgb = np.clip(np.asarray(COLOUR_RGB[colour]) + rng.normal(0.0, 0.04, 3), 0.0, 1.0)
        for _ in range(tries):
            cx, cy = rng.uniform(bound, size - bound, 2)
            if all(math.hypot(cx - p.cx, cy - p.cy) >= bound + p.bound + gap for p in placed.values()):
                placed[i] = ShapeObject(shape, colour, sz, float(cx), float(cy), float(radii[i]),
                                        (float(rgb[0]), float(rgb[1]), float(rgb[2])))
                break
        else:
            return None
    return [placed[i] for i in range(len(attrs))]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth low-contrast noise in [0, 1]: white noise Gaussian-blurred (sigma 3 px at 64 px) per channel,
    rescaled to mean 0.5, std 0.05 (spec: blurred N(0.5, 0.05); the rescale keeps the stated contrast)."""
    from scipy import ndimage

    sigma = 3.0 * size / 64.0
    z = ndimage.gaussian_filter(rng.standard_normal((size, size, 3)), sigma=(sigma, sigma, 0), mode="reflect")
    z = (z - z.mean(axis=(0, 1))) / (z.std(axis=(0, 1)) + 1e-12)
    return 0.5 + 0.05 * z


def _template_for(split: str, rng: np.random.Generator, relational_fraction: float) -> str:
    if split == "testA":
        return "A"
    if split == "testB" or rng.random() < relational_fraction:
        return "R" if rng.random() < 0.5 else "O"
    return "A"


def _scene(rng: np.random.Generator, size: int, template: str) -> tuple[list[ShapeObject], int, dict[str, Any]]:
    """Objects, target index and a spec of `template` that describes the target uniquely (layouts without
    such a spec are redrawn)."""
    margin = 2.0 * size / 64.0
    for _ in range(_MAX_ATTEMPTS):
        objects = _place(rng, _attributes(rng), size)
        if objects is None:
            continue
        perm = rng.permutation(len(objects))
        objects = [objects[int(p)] for p in perm]
        target = int(np.flatnonzero(perm == 0)[0])
        groups = {g: [s for s in specs if matches(s, objects) == [target]]
                  for g, specs in _candidates(template, objects, target, margin).items()}
        groups = {g: specs for g, specs in groups.items() if specs}
        if not groups:
            continue
        names = sorted(groups)
        specs = groups[names[int(rng.integers(len(names)))]]
        return objects, target, specs[int(rng.integers(len(specs)))]
    raise RuntimeError(f"ShapeRef: no {template} expression found in {_MAX_ATTEMPTS} layouts "
                       f"(image_size={size}); use image_size >= 32")


def generate_shaperef(image_size: int = 64, n_train: int = 3000, n_val: int = 400, n_testA: int = 400,
                      n_testB: int = 400, relational_fraction: float = 0.6, seed: int = 0) -> list[Scene]:
    """The embedded ShapeRef dataset (spec Sec. 8.1), one `Scene` (image + one expression) per image, splits in
    the order train, val, testA, testB.

    Every image has 3-5 non-overlapping objects (enclosing discs >= 2 px apart at 64 px; shapes `SHAPES`,
    colours `COLOURS` with N(0, 0.04) jitter, radius small 5-7 / big 9-12 px at 64 px, scaled by S/64)
    on smooth noise; the target always has another object of its shape (other colour) and one of its colour
    (other shape). Templates: train/val draw A with probability 1 - relational_fraction, else R or O
    (50/50); testA is A only, testB R/O 50/50. Each expression is chosen among the target's candidates of the
    template (first a group uniformly, then a spec) that `matches` exactly [target]; a layout with none is
    redrawn. `distractor` is another object of the image drawn with the scene's rng.

    Deterministic: image i of a split uses `numpy.random.default_rng([seed, split_index, i])` (no global
    RNG), so a split does not change when another split's count changes. Ids: image_id = ref_id = sent_id
    = 1, 2, ... over all splits; ann_ids run from 1 over all objects.
    """
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 (objects are 5-12 px at 64 px), got {image_size}")
    if not 0.0 <= relational_fraction <= 1.0:
        raise ValueError(f"relational_fraction must be in [0, 1], got {relational_fraction}")
    counts = {"train": n_train, "val": n_val, "testA": n_testA, "testB": n_testB}
    if any(int(n) < 0 for n in counts.values()):
        raise ValueError(f"split sizes must be >= 0, got {counts}")
    scenes: list[Scene] = []
    image_id, ann_id = 0, 0
    for code, split in enumerate(SHAPEREF_SPLITS):
        for i in range(int(counts[split])):
            rng = np.random.default_rng([int(seed), code, i])
            template = _template_for(split, rng, relational_fraction)
            objects, target, spec = _scene(rng, image_size, template)
            sentence = describe(spec, rng)
            others = [k for k in range(len(objects)) if k != target]
            distractor = others[int(rng.integers(len(others)))]
            masks = np.stack([rasterize(o, image_size) for o in objects])
            pixels = _background(rng, image_size)
            for o, mk in zip(objects, masks, strict=True):
                pixels[mk.astype(bool)] = o.rgb
            image = np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)
            image_id += 1
            ann_ids = list(range(ann_id + 1, ann_id + 1 + len(objects)))
            ann_id += len(objects)
            scenes.append(Scene(image_id=image_id, ref_id=image_id, sent_id=image_id, split=split,
                                file_name=f"{EMBEDDED_DATASET}_{image_id:06d}.png", image=image, objects=objects,
                                masks=masks, ann_ids=ann_ids, target=target, distractor=distractor, spec=spec,
                                sentence=sentence, template=template))
    return scenes


# ------------------------------------------------------------------------------------------- REFER writer
def _rle_json(rle: Mapping[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": [int(v) for v in rle["size"]],
            "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts}


def shaperef_instances(scenes: Sequence[Scene], dataset: str = EMBEDDED_DATASET) -> dict[str, Any]:
    """The COCO `instances.json` content of `scenes`: every object an annotation with an RLE segmentation
    (pycocotools `encode`, counts as str), area, bbox [x, y, w, h], iscrowd 0, category = shape."""
    from pycocotools import mask as mask_utils

    images, annotations = [], []
    for sc in scenes:
        h, w = sc.image.shape[:2]
        images.append({"id": sc.image_id, "file_name": sc.file_name, "height": int(h), "width": int(w)})
        rles = mask_utils.encode(np.asfortranarray(sc.masks.transpose(1, 2, 0)))
        areas = mask_utils.area(rles)
        boxes = mask_utils.toBbox(rles)
        for k, obj in enumerate(sc.objects):
            annotations.append({"id": sc.ann_ids[k], "image_id": sc.image_id,
                                "category_id": CATEGORY_IDS[obj.shape], "segmentation": _rle_json(rles[k]),
                                "area": int(areas[k]), "bbox": [float(v) for v in boxes[k]], "iscrowd": 0})
    return {"info": {"description": f"{dataset}: embedded ShapeRef referring dataset (MagNet pipeline)"},
            "images": images, "annotations": annotations,
            "categories": [{"id": i, "name": s, "supercategory": "shape"} for s, i in CATEGORY_IDS.items()]}


def shaperef_refs(scenes: Sequence[Scene]) -> list[dict[str, Any]]:
    """The REFER refs list of `scenes` (one ref with one sentence per scene; `template`, `spec` and
    `distractor_ann_id` are ShapeRef extras)."""
    refs = []
    for sc in scenes:
        tokens = tokenize(sc.sentence)
        refs.append({"ref_id": sc.ref_id, "ann_id": sc.target_ann_id, "image_id": sc.image_id,
                     "category_id": CATEGORY_IDS[sc.objects[sc.target].shape], "split": sc.split,
                     "sent_ids": [sc.sent_id],
                     "sentences": [{"sent_id": sc.sent_id, "raw": sc.sentence, "sent": " ".join(tokens),
                                    "tokens": tokens, "template": sc.template, "spec": dict(sc.spec)}],
                     "file_name": sc.file_name, "distractor_ann_id": sc.distractor_ann_id})
    return refs


def refs_frame(scenes: Sequence[Scene]) -> pd.DataFrame:
    """The refs DataFrame (`REFS_COLUMNS`, same dtypes) that `load_refer` returns for `scenes` once written
    with `write_refer`, built without touching the disk (e.g. for an ingest manifest)."""
    rows = [{"sample_id": f"{sc.ref_id}_{sc.sent_id}", "ref_id": sc.ref_id, "ann_id": sc.target_ann_id,
             "image_id": sc.image_id, "split": sc.split, "sent_id": sc.sent_id, "sentence": sc.sentence,
             "template": sc.template, "file_name": sc.file_name, "distractor_ann_id": sc.distractor_ann_id}
            for sc in scenes]
    return _refs_dataframe(rows)


def _refs_dataframe(rows: list[dict[str, Any]]) -> pd.DataFrame:
    refs = pd.DataFrame(rows, columns=REFS_COLUMNS)
    for c in ("ref_id", "ann_id", "image_id", "sent_id"):
        refs[c] = refs[c].astype(np.int64)
    for c in ("sample_id", "split", "sentence", "template", "file_name"):
        refs[c] = refs[c].astype(str)
    refs["distractor_ann_id"] = refs["distractor_ann_id"].astype("Int64")
    return refs


def write_refer(root: str | Path, scenes: Sequence[Scene], *, dataset: str = EMBEDDED_DATASET,
                split_by: str = "unc") -> Path:
    """Write `scenes` in the REFER layout under `root` and return the annotation folder `root/<dataset>`:
    `root/images/<dataset>/<file_name>` (PNG, exact pixels), `root/<dataset>/instances.json`
    (`shaperef_instances`) and `root/<dataset>/refs(<split_by>).p` (`shaperef_refs`, pickle protocol 2).

    Atomic: everything is written into a temporary folder under `root`; then an existing annotation folder is
    moved aside, the image folder renamed into place (replacing the old one) and, last, the new annotation
    folder. A run killed before that last rename leaves no refs file, which the loader reports as missing
    (MissingDatasetError); never a half-written dataset nor old refs next to new images.
    """
    from PIL import Image

    if not re.fullmatch(r"[A-Za-z0-9_+.-]+", dataset) or not re.fullmatch(r"[A-Za-z0-9_+.-]+", split_by):
        raise ValueError(f"dataset {dataset!r} / split_by {split_by!r} must be plain folder-name words")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{dataset}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        img_dir, ann_dir = tmp / "images", tmp / dataset
        img_dir.mkdir(parents=True)
        ann_dir.mkdir()
        for sc in scenes:
            Image.fromarray(sc.image).save(img_dir / sc.file_name, format="PNG", compress_level=1)
        with open(ann_dir / "instances.json", "w") as f:
            json.dump(shaperef_instances(scenes, dataset), f, separators=(",", ":"))
        with open(ann_dir / f"refs({split_by}).p", "wb") as f:
            pickle.dump(shaperef_refs(scenes), f, protocol=2)
        # the annotation folder goes first (out) and last (in): old refs never meet new images
        ann_dest, old_ann = root / dataset, None
        if ann_dest.exists():
            old_ann = root / f".{dataset}.old-{uuid.uuid4().hex[:8]}"
            os.rename(ann_dest, old_ann)
        try:
            swap_in_folder(img_dir, root / "images" / dataset)
        except BaseException:
            if old_ann is not None:  # the old images are back in place: so are their refs
                os.rename(old_ann, ann_dest)
            raise
        os.rename(ann_dir, ann_dest)
        if old_ann is not None:
            shutil.rmtree(old_ann, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %d ShapeRef images / refs to %s (%s, refs(%s).p)", len(scenes), root, dataset, split_by)
    return root / dataset


# ------------------------------------------------------------------------------------------- REFER loader
def decode_mask(ann: Mapping[str, Any], height: int, width: int, *, where: str | Path = "") -> np.ndarray:
    """uint8 (height, width) mask in {0, 1} of a COCO annotation, exactly as the released loader: polygons
    ([[x1, y1, x2, y2, ...], ...]) go through pycocotools `frPyObjects(seg, h, w)` + `decode`, are summed over
    the polygons and the target is `sum == 1`, so pixels inside two overlapping polygons become BACKGROUND
    (released-code quirk, reproduced). RLE dicts (compressed counts as str or bytes, or uncompressed list
    counts, converted with `frPyObjects`) and lists of RLE dicts are decoded the same way (`sum == 1`).
    An RLE whose `size` is not [height, width] raises DataValidationError naming the ann and `where`.
    (pycocotools treats a polygon list whose first polygon has exactly 4 numbers as a box; kept as is.)
    """
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation")
    ann_id = ann.get("id")
    loc = f" ({where})" if where else ""
    if not seg:
        raise DataValidationError(f"annotation {ann_id}{loc} has an empty segmentation; drop its refs or fix "
                                  f"the annotation in instances.json")
    h, w = int(height), int(width)
    items = seg if isinstance(seg, list) else [seg]
    try:
        if all(isinstance(p, list) for p in items):  # polygons
            rles = mask_utils.frPyObjects(items, h, w)
        elif all(isinstance(p, Mapping) for p in items):  # RLE(s)
            rles = []
            for p in items:
                size = [int(v) for v in p.get("size", ())]
                if size != [h, w]:
                    raise DataValidationError(
                        f"annotation {ann_id}{loc}: RLE size {size} (h, w) does not match its image "
                        f"[{h}, {w}]; the annotation belongs to another image or was encoded at another "
                        f"resolution: fix instances.json or drop its refs")
                counts = p["counts"]
                if isinstance(counts, list):
                    rles.append(mask_utils.frPyObjects(dict(p), h, w))
                else:
                    rles.append({"size": size, "counts": counts.encode("ascii") if isinstance(counts, str)
                                 else bytes(counts)})
        else:
            raise TypeError(f"segmentation of type {type(items[0]).__name__}")
        m = mask_utils.decode(rles)
    except DataValidationError:
        raise
    except Exception as exc:
        raise DataValidationError(f"annotation {ann_id}{loc}: segmentation cannot be decoded ({exc}); fix or "
                                  f"drop it in instances.json") from exc
    if m.ndim == 3:
        m = m.astype(np.int32).sum(axis=2)
    return (m == 1).astype(np.uint8)


def _load_pickle(path: Path) -> Any:
    """pickle.load of a TRUSTED local file (REFER ships its refs as pickles; unpickling runs code from the
    file, so only point the loader at files you downloaded from the REFER release or wrote yourself)."""
    with open(path, "rb") as f:
        try:
            return pickle.load(f)
        except UnicodeDecodeError:  # a Python 2 pickle with non-ASCII byte strings
            f.seek(0)
            return pickle.load(f, encoding="latin1")


def resolve_image_dir(data_root: str | Path, image_dir: str | Path) -> Path:
    """`image_dir` itself when absolute, else `data_root / image_dir`."""
    p = Path(image_dir)
    return p if p.is_absolute() else Path(data_root) / p


def _check_ref_fields(ref: Any, k: int, path: Path) -> None:
    need = ("ref_id", "ann_id", "image_id", "split", "sentences")
    if not isinstance(ref, Mapping) or any(key not in ref for key in need):
        raise DataValidationError(f"{path}: entry {k} is not a REFER ref (needs keys {list(need)}, got "
                                  f"{sorted(ref) if isinstance(ref, Mapping) else type(ref).__name__}); "
                                  f"the file is not a REFER refs pickle")


def _check_annotation(ann: Mapping[str, Any], info: Mapping[str, Any], where: Path) -> None:
    """Cheap pre-flight checks of a referred annotation: segmentation present, RLE size = image size,
    non-zero area (pycocotools, no full decode)."""
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation")
    h, w = int(info["height"]), int(info["width"])
    if not seg:
        raise DataValidationError(f"annotation {ann.get('id')} ({where}) has an empty segmentation; drop its "
                                  f"refs or fix the annotation in instances.json")
    items = seg if isinstance(seg, list) else [seg]
    try:
        if all(isinstance(p, list) for p in items):
            area = int(np.sum(mask_utils.area(mask_utils.frPyObjects(items, h, w))))
        else:
            decoded = decode_mask(ann, h, w, where=where)  # also checks the RLE size against the image
            area = int(decoded.sum())
    except DataValidationError:
        raise
    except Exception as exc:
        raise DataValidationError(f"annotation {ann.get('id')} ({where}): segmentation cannot be read "
                                  f"({exc}); fix or drop it in instances.json") from exc
    if area == 0:
        raise DataValidationError(f"annotation {ann.get('id')} ({where}) has an empty mask (area 0); drop its "
                                  f"refs or fix the annotation in instances.json")


def _image_header(path: Path, fix: str) -> tuple[int, int]:
    """(width, height) of an image file from its header; missing -> MissingDatasetError, unreadable ->
    DataValidationError, both naming the file."""
    from PIL import Image

    if not path.is_file():
        raise missing_dataset("image file", path, fix)
    try:
        with Image.open(path) as im:
            im.verify()
            return int(im.size[0]), int(im.size[1])
    except Exception as exc:
        raise DataValidationError(f"image file {path} cannot be read ({exc}); re-download or re-copy it "
                                  f"({fix})") from exc


def load_refer(data_root: str | Path, dataset: str = "refcoco", split_by: str = "unc",
               image_dir: str | Path = COCO_IMAGE_DIR, *, splits: Sequence[str] | None = None,
               check_images: bool = True, fix: str = REFER_FIX
               ) -> tuple[pd.DataFrame, dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """Read `<data_root>/<dataset>/refs(<split_by>).p` and `instances.json` (layout in the module docstring).

    Returns `(refs, anns, images)`:
      * refs: DataFrame, one row per SENTENCE, columns `REFS_COLUMNS` = sample_id (str "<ref_id>_<sent_id>"),
        ref_id, ann_id, image_id (int64), split (str), sent_id (int64), sentence (the sentence's `raw` text,
        which the released loader encodes; `sent` when there is no raw), template ("all" when the file has
        none), file_name (the image file of `images[image_id]`, relative to the image folder),
        distractor_ann_id (pandas Int64, <NA> when the file has none); rows in file order of refs and
        sentences; `refs.attrs` holds data_root, dataset, split_by and the resolved image_dir;
      * anns: ann_id -> annotation dict of instances.json (all of them);
      * images: image_id -> image info dict of instances.json (all of them).

    `image_dir` (relative to data_root unless absolute) holds the images: COCO_IMAGE_DIR for the real data,
    EMBEDDED_IMAGE_DIR for ShapeRef. `splits` keeps only those splits. The refs pickle is read with plain
    `pickle.load`, which runs code from the file: it must be a trusted local file (the REFER release or our
    writer).

    Raises, before any training, with the file and the fix (`fix` is quoted for missing data):
    MissingDatasetError for a missing refs pickle, instances.json or image file; DataValidationError for an
    unreadable file, a ref whose ann_id / image_id is not in instances.json (or whose ann lies on another
    image), a ref without sentences, an unknown split (in the file or in `splits`), an empty segmentation or
    mask, an RLE whose size differs from its image, and (check_images) an unreadable image or one whose
    pixel size differs from instances.json's height/width.
    """
    root = Path(data_root)
    ds_dir = root / dataset
    refs_path, inst_path = ds_dir / f"refs({split_by}).p", ds_dir / "instances.json"
    if not refs_path.is_file():
        raise missing_dataset(f"REFER refs file refs({split_by}).p of {dataset}", refs_path, fix)
    if not inst_path.is_file():
        raise missing_dataset(f"REFER instances.json of {dataset}", inst_path, fix)
    unknown = sorted(set(splits or ()) - set(KNOWN_SPLITS))
    if unknown:
        raise DataValidationError(f"unknown split(s) {unknown} requested for {refs_path}; known splits: "
                                  f"{list(KNOWN_SPLITS)} (RefCOCO/+ unc: train/val/testA/testB, G-Ref umd: "
                                  f"train/val/test, google: train/val); fix magnet.data splits in "
                                  f"conf/<env>/parameters/magnet.yml")
    try:
        raw_refs = _load_pickle(refs_path)
    except Exception as exc:
        raise DataValidationError(f"{refs_path} is not a readable REFER refs pickle ({exc}); re-download or "
                                  f"re-create it ({fix})") from exc
    try:
        with open(inst_path) as f:
            inst = json.load(f)
        images = {int(im["id"]): im for im in inst["images"]}
        anns = {int(a["id"]): a for a in inst["annotations"]}
    except Exception as exc:
        raise DataValidationError(f"{inst_path} is not a readable COCO instances.json (needs images[].id and "
                                  f"annotations[].id; {exc!r}); re-download or re-create it ({fix})") from exc
    if not isinstance(raw_refs, list):
        raise DataValidationError(f"{refs_path} holds a {type(raw_refs).__name__}, not a list of refs; the "
                                  f"file is not a REFER refs pickle ({fix})")

    rows: list[dict[str, Any]] = []
    found: Counter[str] = Counter()
    checked_anns: set[int] = set()
    for k, ref in enumerate(raw_refs):
        _check_ref_fields(ref, k, refs_path)
        ref_id, ann_id, image_id, split = int(ref["ref_id"]), int(ref["ann_id"]), int(ref["image_id"]), ref["split"]
        if split not in KNOWN_SPLITS:
            raise DataValidationError(f"{refs_path}: ref {ref_id} has unknown split {split!r} (known: "
                                      f"{list(KNOWN_SPLITS)}); the file is corrupt or not a REFER refs file")
        found[split] += 1
        if splits is not None and split not in splits:
            continue
        if image_id not in images:
            raise DataValidationError(f"{refs_path}: ref {ref_id} points to image_id {image_id}, which is not "
                                      f"in {inst_path}; refs and instances.json come from different datasets "
                                      f"or releases: re-download both ({fix})")
        if ann_id not in anns:
            raise DataValidationError(f"{refs_path}: ref {ref_id} points to ann_id {ann_id}, which is not in "
                                      f"{inst_path}; refs and instances.json come from different datasets or "
                                      f"releases: re-download both ({fix})")
        if int(anns[ann_id]["image_id"]) != image_id:
            raise DataValidationError(f"{refs_path}: ref {ref_id} has image_id {image_id} but its ann_id {ann_id} "
                                      f"lies on image {anns[ann_id]['image_id']} in {inst_path} ({fix})")
        distractor = ref.get("distractor_ann_id")
        if distractor is not None:
            distractor = int(distractor)
            if distractor not in anns or int(anns[distractor]["image_id"]) != image_id or distractor == ann_id:
                raise DataValidationError(f"{refs_path}: ref {ref_id} has distractor_ann_id {distractor}, which "
                                          f"is not another annotation of image {image_id} in {inst_path} ({fix})")
        if not ref["sentences"]:
            raise DataValidationError(f"{refs_path}: ref {ref_id} has no sentences; drop it or re-download "
                                      f"the file ({fix})")
        info = images[image_id]
        file_name = str(info["file_name"])
        for a in (ann_id, distractor):
            if a is not None and a not in checked_anns:
                _check_annotation(anns[a], info, inst_path)
                checked_anns.add(a)
        for s in ref["sentences"]:
            sent_id = int(s["sent_id"])
            rows.append({"sample_id": f"{ref_id}_{sent_id}", "ref_id": ref_id, "ann_id": ann_id,
                         "image_id": image_id, "split": str(split), "sent_id": sent_id,
                         "sentence": str(s.get("raw", s.get("sent", ""))),
                         "template": str(s.get("template", "all")), "file_name": file_name,
                         "distractor_ann_id": distractor})
    if splits is not None:
        absent = [s for s in splits if not found[s]]
        if absent:
            raise DataValidationError(f"{refs_path} has no refs of split(s) {absent}; it has {dict(found)}. "
                                      f"Pick splits of this dataset/split_by in conf/<env>/parameters/magnet.yml")
    refs = _refs_dataframe(rows)
    if refs["sample_id"].duplicated().any():
        dup = refs.loc[refs["sample_id"].duplicated(), "sample_id"].tolist()[:5]
        raise DataValidationError(f"{refs_path}: duplicate (ref_id, sent_id) pairs {dup}; re-download it")

    img_dir = resolve_image_dir(root, image_dir)
    if check_images:
        for image_id in pd.unique(refs["image_id"]):
            info = images[int(image_id)]
            path = img_dir / str(info["file_name"])
            w, h = _image_header(path, fix)
            if (h, w) != (int(info["height"]), int(info["width"])):
                on_img = sorted(set(refs.loc[refs["image_id"] == image_id, "ann_id"]))
                raise DataValidationError(
                    f"image file {path} is {h}x{w} (h x w) but {inst_path} gives height {info['height']}, "
                    f"width {info['width']} for image {image_id}, so the masks of ann(s) {on_img} would not "
                    f"fit it: use the image file of that release or fix instances.json ({fix})")
    refs.attrs.update({"data_root": str(root), "dataset": dataset, "split_by": split_by,
                       "image_dir": str(img_dir)})
    log.info("%s (%s): %d refs / %d sentences / %d images read (per split: %s)", dataset, split_by,
             refs["ref_id"].nunique(), len(refs), refs["image_id"].nunique(),
             refs.groupby("split")["sent_id"].count().to_dict())
    return refs, anns, images


# ------------------------------------------------------------------------------------------- arrays
def _read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise missing_dataset("image file", path, "re-download or re-copy it (see pipelines/magnet/README.md)")
    return read_rgb(path, "image file", "re-download or re-copy it")


def load_split_arrays(refs_df: pd.DataFrame, anns: Mapping[int, Mapping[str, Any]],
                      images: Mapping[int, Mapping[str, Any]], image_dir: str | Path,
                      size: int) -> dict[str, np.ndarray]:
    """The rows of `refs_df` (from `load_refer`) as arrays at size x size:

      * images: uint8 (n_img, S, S, 3), each image once, plain PIL bilinear resize (no aspect keep);
      * image_ids: int64 (n_img,), the image_id of each, in order of first appearance in refs_df;
      * masks: uint8 (n_sent, S, S) in {0, 1}, the target mask of each sentence row (`decode_mask` at the
        original size, then nearest resize; the mask is per ref, repeated for each of its sentences);
      * image_index: int64 (n_sent,), row -> index into images;
      * distractor_masks: uint8 (n_sent, S, S), the mask of the row's distractor_ann_id (zeros when <NA>);
      * has_distractor: bool (n_sent,).

    `image_dir` is the folder of the file names (`refs_df.attrs["image_dir"]` after `load_refer`). Raises,
    naming the file: MissingDatasetError for a missing image; DataValidationError for an undecodable image,
    an image whose size differs from instances.json (naming its anns), an empty decoded mask.
    Memory: n_img*S*S*3 + 2*n_sent*S*S bytes (RefCOCO train at 480 px: ~15 GB; use a smaller S or a subset).
    """
    from PIL import Image

    img_dir = Path(image_dir)
    n = len(refs_df)
    image_ids = pd.unique(refs_df["image_id"]).astype(np.int64) if n else np.zeros(0, np.int64)
    position = {int(i): k for k, i in enumerate(image_ids)}
    out_images = np.zeros((len(image_ids), size, size, 3), np.uint8)
    for k, image_id in enumerate(image_ids):
        info = images[int(image_id)]
        path = img_dir / str(info["file_name"])
        arr = _read_image(path)
        if arr.shape[:2] != (int(info["height"]), int(info["width"])):
            on_img = sorted(set(refs_df.loc[refs_df["image_id"] == image_id, "ann_id"].astype(int)))
            raise DataValidationError(
                f"image file {path} is {arr.shape[0]}x{arr.shape[1]} (h x w) but instances.json gives "
                f"{info['height']}x{info['width']} for image {image_id}, so the masks of ann(s) {on_img} "
                f"would not fit it: use the image file of that release or fix instances.json")
        out_images[k] = np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))

    cache: dict[int, np.ndarray] = {}

    def mask_of(ann_id: int, image_id: int) -> np.ndarray:
        if ann_id not in cache:
            info = images[image_id]
            where = img_dir / str(info["file_name"])
            m = decode_mask(anns[ann_id], int(info["height"]), int(info["width"]), where=where)
            if not m.any():
                raise DataValidationError(f"annotation {ann_id} ({where}) decodes to an empty mask (e.g. "
                                          f"all its pixels lie under two overlapping polygons); drop its refs")
            cache[ann_id] = np.asarray(Image.fromarray(m).resize((size, size), Image.NEAREST))
        return cache[ann_id]

    masks = np.zeros((n, size, size), np.uint8)
    distractor_masks = np.zeros((n, size, size), np.uint8)
    has_distractor = np.zeros(n, bool)
    image_index = np.zeros(n, np.int64)
    ann_col = refs_df["ann_id"].to_numpy()
    img_col = refs_df["image_id"].to_numpy()
    dis_col = refs_df["distractor_ann_id"].astype("Int64").to_numpy(dtype=object, na_value=None)
    for r in range(n):
        image_id = int(img_col[r])
        image_index[r] = position[image_id]
        masks[r] = mask_of(int(ann_col[r]), image_id)
        if dis_col[r] is not None:
            distractor_masks[r] = mask_of(int(dis_col[r]), image_id)
            has_distractor[r] = True
    vanished = int((masks.reshape(n, -1).max(axis=1) == 0).sum()) if n else 0
    if vanished:
        log.warning("%d of %d target masks vanish when resized to %d px (objects smaller than a pixel)",
                    vanished, n, size)
    for name, arr, shape in (("images", out_images, (len(image_ids), size, size, 3)),
                             ("masks", masks, (n, size, size)),
                             ("distractor_masks", distractor_masks, (n, size, size))):
        if arr.shape != shape or arr.dtype != np.uint8:
            raise DataValidationError(f"{name}: built with shape {arr.shape} {arr.dtype}, expected {shape} "
                                      f"uint8 (internal error in load_split_arrays)")
    return {"images": out_images, "image_ids": image_ids, "masks": masks, "image_index": image_index,
            "distractor_masks": distractor_masks, "has_distractor": has_distractor}


# ------------------------------------------------------------------------------------------ Kedro dataset
# The raw layout as a Kedro dataset (catalog `magnet.raw_layout`). `save({"scenes": [...]})` writes generated
# ShapeRef scenes in the REFER layout under `path` (`write_refer`, atomic) and a `layout.json` pointing the
# loader at it; `save({"pointer": {...}})` (real data) writes only the pointer (nothing is copied). `load()`
# returns the pointer: the keyword arguments of `load_refer` (data_root, dataset, split_by, image_dir).
POINTER = "layout.json"


class ReferLayoutDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        pointer = json.loads((self._path / POINTER).read_text())
        if pointer.pop("inside_layout", False):
            # generated data: the layout is this folder, wherever the project was cloned or moved to
            pointer["data_root"] = str(self._path)
        return pointer

    def save(self, data: dict[str, Any]) -> None:
        if "scenes" in data:
            write_refer(self._path, data["scenes"], dataset=EMBEDDED_DATASET, split_by="unc")
            # relative on purpose: an absolute path would differ per clone (and DVC's hash of the folder with it)
            pointer = {"data_root": ".", "inside_layout": True, "dataset": EMBEDDED_DATASET, "split_by": "unc",
                       "image_dir": EMBEDDED_IMAGE_DIR}
        elif "pointer" in data:
            pointer = dict(data["pointer"])
        else:
            raise DataValidationError("ReferLayoutDataset.save needs generated scenes ({'scenes': [...]}) or a "
                                      "pointer to real REFER data ({'pointer': {...}})")
        self._path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self._path / POINTER, json.dumps(pointer, indent=1, sort_keys=True).encode())

    def _exists(self) -> bool:
        return (self._path / POINTER).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
