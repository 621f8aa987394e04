"""AV2AV's raw dataset: the corpus folder in the AV-HuBERT / MuAViC manifest layout (`data.py`).

Saving ``{"utterances": [...], "splits": {split: [id, ...]}}`` writes the embedded EspeakAV corpus: per split a
`<split>.tsv` (root line, then id / video / audio / n_frames / n_samples), the parallel texts `<split>.<lang>` of
each row's sentence tuple in every language, and the row's own language, speaker and tuple (`<split>.lang`,
`<split>.spk`, `<split>.tuple`); per utterance `<lang>/<id>.wav` (16 kHz), `<id>.npz` (face frames),
`<id>.lip.npz`, `<id>.bbox.pkl` and `<id>.phn` (espeak-ng's phoneme timings: start_s end_s symbol). The folder is
built completely in a temporary sibling and renamed into place, so an interrupted ingest leaves the previous
corpus intact. Saving ``{"pointer": {"root": ...}}`` records a real corpus folder. Loading returns the pointer
(`root` resolved)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset

from cvpr24.core.datasets import atomic_write_bytes, swap_in_folder
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.av2av import data as D
from cvpr24.pipelines.av2av.common import LANGS

POINTER = "corpus.json"


def write_corpus(utterances: list[dict[str, Any]], splits: dict[str, list[str]], dest: Path) -> None:
    """The embedded corpus in the manifest layout (see the module docstring), written atomically."""
    by_id = {u["id"]: u for u in utterances}
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for split, ids in splits.items():
            rows = []
            for uid in ids:
                u = by_id[uid]
                folder = tmp / u["lang"]
                folder.mkdir(exist_ok=True)
                D.write_audio(folder / f"{uid}.wav", u["audio"])
                D.write_video(folder / f"{uid}.npz", u["frames"])
                D.write_video(folder / f"{uid}.lip.npz", u["lip"])
                D.write_bboxes(folder / f"{uid}.bbox.pkl", u["bboxes"])
                (folder / f"{uid}.phn").write_text("".join(f"{a:.4f} {b:.4f} {p}\n" for a, b, p in u["phonemes"]))
                rows.append({"id": uid, "video": f"{u['lang']}/{uid}.npz", "audio": f"{u['lang']}/{uid}.wav",
                             "n_frames": len(u["lip"]), "n_samples": len(u["audio"])})
            D.write_manifest(tmp, split, rows, root_line=".")
            for lang in LANGS:
                D.write_labels(tmp / f"{split}.{lang}", [by_id[i]["texts"][lang] for i in ids])
            for key, ext in (("lang", "lang"), ("speaker", "spk"), ("tuple_id", "tuple")):
                D.write_labels(tmp / f"{split}.{ext}", [str(by_id[i][key]) for i in ids])
        swap_in_folder(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class CorpusFolderDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    def __init__(self, path: str, metadata: dict[str, Any] | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> dict[str, Any]:
        file = self._path / POINTER
        if not file.is_file():
            raise DataValidationError(f"{file} not found: run `kedro run --pipeline=av2av --tags=ingest` first")
        pointer = json.loads(file.read_text())
        if pointer.pop("inside", False):
            pointer["root"] = str(self._path / pointer["root"])
        return pointer

    def save(self, data: dict[str, Any]) -> None:
        if "utterances" in data:
            write_corpus(data["utterances"], data["splits"], self._path / "espeakav")
            pointer = {"root": "espeakav", "inside": True, "kind": "embedded EspeakAV",
                       "splits": list(data["splits"])}
        elif "pointer" in data:
            pointer = dict(data["pointer"])
        else:
            raise DataValidationError("CorpusFolderDataset.save needs {'utterances': [...], 'splits': {...}} or "
                                      "{'pointer': {'root': ...}}")
        self._path.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self._path / POINTER, json.dumps(pointer, indent=1, sort_keys=True).encode())

    def _exists(self) -> bool:
        return (self._path / POINTER).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
