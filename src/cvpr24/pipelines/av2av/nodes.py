"""AV2AV's five phases as Kedro nodes (arguments in, values out; the catalog does the I/O).

ingest      -> the corpus folder in the AV-HuBERT / MuAViC manifest layout: the embedded EspeakAV corpus
               (a parallel mini-grammar in five languages, spoken by espeak-ng voices, with a procedural face whose
               mouth follows espeak-ng's phoneme timings), or a pointer to a real one; a manifest of the utterances
preprocess  -> every utterance read back through the one validating loader (`data.load_utterance`) and turned
               into the models' inputs: stacked log filterbanks, MFCC, 50 Hz log-mels, lip ROIs, babble-noise
               versions (training: random SNRs; test: each SNR of the robustness table), face frames of the
               renderer's training subset and of the test set
train       -> fit.py: every model, cached and resumable, two at a time (jobs.py)
evaluate    -> evaluation.py: the whole AV2AV chain per input condition, the baselines, ASR-BLEU, unit accuracy,
               LSE-C / LSE-D, FID-proxy, speaker similarity; one table row per cell
report      -> tables, claims, figures, playable clips (report.py)

Test utterances are spoken by the two held-out speakers; their sentences are unseen as wholes in training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from cvpr24.core.ingest import dispatch, missing_dataset
from cvpr24.core.provenance import fingerprint_arrays
from cvpr24.core.seeding import derive_seed
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.av2av import data as D
from cvpr24.pipelines.av2av import features as FE
from cvpr24.pipelines.av2av.common import LANGS

log = logging.getLogger(__name__)
REAL_FIX = ("see pipelines/av2av/README.md (Real data): point av2av.data.real.root at a folder with "
            "<split>.tsv, <split>.<lang> texts and <split>.lang (the language of each row)")
SPLITS = ("train", "valid", "test")


# ------------------------------------------------------------------------------------------- ingest
def _embedded_corpus(data: dict[str, Any], seed: int, progress: bool) -> dict[str, Any]:
    from cvpr24.pipelines.av2av import corpus as C
    from cvpr24.pipelines.av2av import espeak as E

    E.require_espeak(tuple(data.get("langs", LANGS)))
    sizes = dict(data["corpus"])
    n_train, n_valid, n_test = (int(sizes[k]) for k in ("n_train", "n_valid", "n_test"))
    tuples = C.make_tuples(n_train + n_valid + n_test, seed)
    parts = C.split_tuples(tuples, n_train, n_valid, n_test, seed)
    speakers = {s: [sp for sp in E.SPEAKERS if sp["split"] == ("test" if s == "test" else "train")] for s in SPLITS}
    langs = list(data.get("langs", LANGS))
    jobs = []
    for split in SPLITS:
        for t in parts[split]:
            for lang in langs:
                uid = f"{t['tuple_id']}_{lang}"
                rng = np.random.default_rng(derive_seed(seed, "speaker", uid))
                spk = speakers[split][int(rng.integers(len(speakers[split])))]
                jobs.append((split, uid, t, lang, spk))
    from cvpr24.core.parallel import map_jobs

    workers = int(data.get("workers", 2))
    chunks = [jobs[i::workers * 4] for i in range(workers * 4)]   # interleaved, so chunks take similar time
    done = map_jobs(_synth_chunk, [{"items": c, "seed": seed} for c in chunks if c], workers=workers,
                    threads=workers, desc="av2av: synthesise EspeakAV", progress=progress)
    by_id = {u["id"]: u for part in done for u in part}
    utts, splits = [], {s: [] for s in SPLITS}
    for split, uid, _t, _lang, _spk in jobs:        # the order of `jobs`, whatever the worker count
        utts.append(by_id[uid])
        splits[split].append(uid)
    return {"utterances": utts, "splits": splits}


def _synth_chunk(items: list[tuple], seed: int) -> list[dict[str, Any]]:
    """Speech (espeak-ng) and face video of some utterances: one job of the ingest's worker pool."""
    from cvpr24.pipelines.av2av import visual as V

    out = []
    for _split, uid, t, lang, spk in items:
        u = V.make_utterance(t["text"][lang], lang, spk, derive_seed(seed, "face", uid))
        out.append({"id": uid, "lang": lang, "speaker": spk["id"], "tuple_id": t["tuple_id"], "texts": t["text"],
                    "audio": u["audio"], "frames": u["frames"], "lip": u["lip"], "bboxes": u["bboxes"],
                    "phonemes": u["phonemes"]})
    return out


def ingest(data: dict[str, Any], runtime: dict[str, Any]) -> dict[str, Any]:
    """The corpus folder (written by the folder dataset) or a pointer to a real one."""
    seed, progress = int(runtime["seed"]), bool(runtime.get("progress", True))

    def real():
        root = Path(str(dict(data["real"]).get("root", "")))
        if not (root / "test.tsv").is_file():
            raise missing_dataset("AV2AV manifest folder (test.tsv)", root, REAL_FIX)
        return {"pointer": {"root": str(root), "kind": "real", "splits": list(data["real"].get("splits", SPLITS))}}

    raw, _fix = dispatch(data, slug="av2av", embedded=lambda: _embedded_corpus(data, seed, progress), real=real,
                         real_fix=REAL_FIX)
    return raw


def manifest(raw_corpus: dict[str, Any], data: dict[str, Any]) -> pd.DataFrame:
    """One row per utterance (split, language, speaker, tuple, text, sizes), read back from the manifest files and
    checked: known languages, label files aligned by row, audio and video of matching length."""
    root = Path(raw_corpus["root"])
    langs = list(data.get("langs", LANGS))
    frames = []
    for split in raw_corpus.get("splits", SPLITS):
        tsv = root / f"{split}.tsv"
        _root, df = D.read_manifest(tsv)
        n = len(df)
        lang_file = root / f"{split}.lang"
        row_lang = D.read_labels(lang_file, n, tsv) if lang_file.exists() else [data["real"]["lang"]] * n
        for lang in set(row_lang):
            D.check_language(lang, langs)
        texts = {lang: D.read_labels(root / f"{split}.{lang}", n, tsv) for lang in langs}
        spk = D.read_labels(root / f"{split}.spk", n, tsv) if (root / f"{split}.spk").exists() else df["id"]
        tup = D.read_labels(root / f"{split}.tuple", n, tsv) if (root / f"{split}.tuple").exists() else df["id"]
        for i, row in enumerate(df.to_dict("records")):
            D.check_utterance(int(row["n_samples"]), int(row["n_frames"]), name=f"{tsv} row {i + 1} ({row['id']})")
        frames.append(df.assign(split=split, lang=row_lang, speaker=list(spk), tuple_id=list(tup),
                                **{f"text_{lang}": texts[lang] for lang in langs}))
    man = pd.concat(frames, ignore_index=True).rename(columns={"id": "sample_id"})
    if man["sample_id"].duplicated().any():
        dup = man.loc[man["sample_id"].duplicated(), "sample_id"].tolist()[:5]
        raise DataValidationError(f"{root}: utterance ids repeat across splits ({dup}); make them unique")
    man["text"] = [r[f"text_{r['lang']}"] for r in man.to_dict("records")]
    return man


# --------------------------------------------------------------------------------------- preprocess
def _babble(pool: list[np.ndarray], length: int, rng: np.random.Generator, n: int) -> np.ndarray:
    idx = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    return FE.babble([pool[i] for i in idx], length, rng, n=len(idx))


def preprocess(raw_corpus: dict[str, Any], manifest: pd.DataFrame, prep: dict[str, Any], runtime: dict[str, Any]
               ) -> dict[str, Any]:
    """Every model input, validated before any training starts (a bad utterance stops here, naming its file)."""
    from cvpr24.pipelines.av2av import visual as V

    seed, progress = int(runtime["seed"]), bool(runtime.get("progress", True))
    root = Path(raw_corpus["root"])
    man = manifest.sort_values(["split", "sample_id"], key=lambda s: s.map({k: i for i, k in enumerate(SPLITS)})
                               if s.name == "split" else s).reset_index(drop=True)
    train_ids = man.loc[man["split"] == "train", "sample_id"].tolist()
    rng = np.random.default_rng(derive_seed(seed, "face-subset"))
    n_face = min(int(prep["face_train_utterances"]), len(train_ids))
    face_ids = set(np.asarray(train_ids)[np.sort(rng.choice(len(train_ids), n_face, replace=False))].tolist())
    keep_faces = face_ids | set(man.loc[man["split"] == "test", "sample_id"])
    out: dict[str, Any] = {k: [] for k in ("audio", "a104", "mfcc", "mel", "lip")}
    out.update(faces={}, visemes={}, bboxes={})
    errors = []
    for row in tqdm(man.to_dict("records"), desc="av2av: features", disable=not progress, mininterval=1.0):
        d_row = {"id": row["sample_id"], "video": row["video"], "audio": row["audio"], "n_frames": row["n_frames"],
                 "n_samples": row["n_samples"]}
        try:
            u = D.load_utterance(root, d_row, require_faces=row["sample_id"] in keep_faces)
        except DataValidationError as exc:
            errors.append(str(exc))
            continue
        wave = u["audio"]
        if not np.isfinite(wave).all():
            errors.append(f"{root / row['audio']}: audio holds NaN or inf; re-create the file")
            continue
        out["audio"].append(wave)
        out["a104"].append(FE.audio_input(wave))
        out["mfcc"].append(FE.mfcc_targets(wave))
        out["mel"].append(FE.log_mel(wave))
        out["lip"].append(u["lip"])
        if u["faces"] is not None and row["sample_id"] in keep_faces:
            out["faces"][row["sample_id"]] = u["faces"]
            out["bboxes"][row["sample_id"]] = u["bboxes"]
            phn = (root / row["audio"]).with_suffix(".phn")
            if phn.exists():
                ph = [(float(a), float(b), p) for a, b, p in (ln.split(" ", 2) for ln in phn.read_text().splitlines())]
                out["visemes"][row["sample_id"]] = V.viseme_track(ph, len(u["lip"]))
    if errors:
        raise DataValidationError(f"{len(errors)} bad utterance(s) in {root}; nothing was trained:\n"
                                  + "\n".join(f"- {e}" for e in errors[:20]))
    split = man["split"].to_numpy()
    # babble: the sum of other utterances of the same split (training noise from training speech only)
    pools = {s: [out["audio"][i] for i in np.flatnonzero(split == s)] for s in SPLITS}
    noisy_train: list[list[np.ndarray]] = []
    train_snrs = [float(s) for s in prep["train_snrs"]]
    for i in np.flatnonzero(split == "train"):
        r = np.random.default_rng(derive_seed(seed, "train-noise", man.loc[i, "sample_id"]))
        versions = []
        for _ in range(int(prep["noisy_versions"])):
            noise = _babble(pools["train"], len(out["audio"][i]), r, int(prep["babble_n"]))
            versions.append(FE.audio_input(FE.mix_at_snr(out["audio"][i], noise, float(r.choice(train_snrs)))))
        noisy_train.append(versions)
    test_noisy: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for snr in prep["test_snrs"]:
        key = str(int(snr))
        test_noisy[key] = {}
        for i in np.flatnonzero(split == "test"):
            sid = man.loc[i, "sample_id"]
            r = np.random.default_rng(derive_seed(seed, "test-noise", sid))   # same babble at every SNR
            noise = _babble([a for j, a in zip(np.flatnonzero(split == "test"), pools["test"], strict=True)
                             if man.loc[j, "tuple_id"] != man.loc[i, "tuple_id"]], len(out["audio"][i]), r,
                            int(prep["babble_n"]))
            wave = FE.mix_at_snr(out["audio"][i], noise, float(snr)).astype(np.float32)
            test_noisy[key][sid] = {"a104": FE.audio_input(wave), "mel": FE.log_mel(wave)}
    fp = fingerprint_arrays({f"{i}": a for i, a in enumerate(out["audio"])})
    log.info("av2av preprocess: %d utterances (%s), %d with faces", len(man),
             man["split"].value_counts().to_dict(), len(out["faces"]))
    return {"meta": man, **out, "noisy_train": noisy_train, "test_noisy": test_noisy, "fingerprint": fp}
