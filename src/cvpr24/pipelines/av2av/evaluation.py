"""AV2AV's evaluation: the whole chain (AV speech -> units -> translated units -> speech + lips) per input
condition, its baselines, and the metrics of the paper with models trained here.

Conditions: input modality A / V / AV x babble SNR (clean and the robustness SNRs; V does not hear the noise).
Speech metrics: ASR-BLEU (our CTC recogniser on the Griffin-Lim waveform, sacrebleu on normalised text), unit
accuracy against the unit model's own clean-AV targets (iteration-2 k-means), speaker similarity. Video metrics on
a subset of clean-AV translations: LSE-D / LSE-C (mini SyncNet), FID-proxy (Fréchet distance of viseme-classifier
features). Baselines: A2A (the same models fed audio-only units), copy source units, the cascade (ASR -> dictionary
translation -> espeak-ng), source video unchanged, time-shifted units, the renderer without its unit branch, the
non-learned viseme-template renderer.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cvpr24.core.seeding import derive_seed
from cvpr24.pipelines.av2av import asr as R
from cvpr24.pipelines.av2av import face as FA
from cvpr24.pipelines.av2av import features as FE
from cvpr24.pipelines.av2av import jobs as J
from cvpr24.pipelines.av2av import speech as SP
from cvpr24.pipelines.av2av import translate as TR
from cvpr24.pipelines.av2av import units as U
from cvpr24.pipelines.av2av.common import LANGS, dedup

log = logging.getLogger(__name__)


class Models:
    def __init__(self, models: dict[str, Any], train: dict[str, Any], charset: str):
        k = int(train["units"]["iter1"]["K"])
        self.k = k
        self.units = J.load_units(models["units"], train["units"])
        self.units1 = U.load_unit_model(models["units"]["state1"], dict(train["units"]["iter1"]))
        self.centres2 = np.asarray(models["units"]["centres2"])
        self.layer = int(train["units"].get("layer", 3))
        self.mt, self.vocab = J.load_translation(models["translation"], k, dict(train["translation"]))
        self.beam = int(train["translation"].get("beam", 5))
        self.voc = J.load_vocoder(models["vocoder"], dict(train["vocoder"]))
        self.spk = J.load_speaker(models["speaker"])
        self.asr = J.load_asr(models["asr"], dict(train["asr"]), charset)
        self.sync = J.load_syncnet(models["syncnet"]["state"], dict(train["syncnet"]))
        rcfg = dict(train["renderer"])
        self.renderer = J.load_renderer(models["renderer"], {**rcfg, "K": k})
        self.renderer0 = J.load_renderer(models["renderer_nounits"], {**rcfg, "K": k, "use_units": False})
        self.viseme = J.load_viseme(models["viseme"], dict(train["viseme"])) if "viseme" in models else None
        self.charset = charset
        self._snap: dict[str, dict[str, str]] = {}

    def transcribe(self, mels: list[np.ndarray], langs: list[str]) -> tuple[list[str], list[str]]:
        """(raw greedy CTC transcripts, the same snapped to the target language's lexicon): the second is the
        evaluator's output (an ASR with a closed vocabulary), the first is kept for the record."""
        from cvpr24.pipelines.av2av import corpus as C

        raw = R.transcribe(self.asr, mels, langs, self.charset)
        snapped = [R.snap_to_lexicon(h, C.lexicon(t), self._snap.setdefault(t, {})) for h, t in zip(raw, langs, strict=True)]
        return raw, snapped


def speak(m: Models, units: list[list[int]], spk: np.ndarray, langs: list[str], gl_iters: int, seed: int
          ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """De-duplicated units -> (Griffin-Lim waveforms, their log-mels as heard, duration-expanded 50 Hz units)."""
    units = [u if len(u) else [0] for u in units]
    mels, durs = SP.synthesize_mel(m.voc, units, spk, langs, return_durations=True)
    waves = SP.griffin_lim(mels, n_iter=gl_iters, seed=seed)
    waves = [w[: len(w) // 640 * 640] if len(w) >= 640 else np.pad(w, (0, 640 - len(w))) for w in waves]
    heard = [FE.log_mel(w.astype(np.float32)) for w in waves]
    expanded = [np.repeat(np.asarray(u), np.asarray(d, int)) for u, d in zip(units, durs, strict=True)]
    return waves, heard, expanded


def asr_bleu(m: Models, heard: list[np.ndarray], langs: list[str], refs: list[str]
             ) -> tuple[list[str], list[str], float]:
    """(raw transcripts, lexicon-decoded transcripts, corpus BLEU of the latter)."""
    raw, hyps = m.transcribe(heard, langs)
    return raw, hyps, R.bleu(hyps, refs)


def evaluate(models: dict[str, Any], model_input: dict[str, Any], train: dict[str, Any], params: dict[str, Any],
             runtime: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, np.ndarray]]:
    """Returns (translations: one row per source utterance, target language and system; units: unit accuracy per
    utterance and condition; video: LSE / FID rows per clip and system; clips: arrays for the report)."""
    from cvpr24.pipelines.av2av import corpus as C

    torch.set_num_threads(int(runtime.get("threads", 2)))
    torch.use_deterministic_algorithms(True, warn_only=True)
    seed, progress = int(runtime["seed"]), bool(runtime.get("progress", True))
    m = Models(models, train, C.CHARSET)
    mi = model_input
    meta = mi["meta"].reset_index(drop=True)
    test = meta[meta["split"] == "test"]
    tuples = sorted(test["tuple_id"].unique())
    n_main, n_rob = int(params["tuples_main"]), int(params["tuples_robust"])
    main_t, rob_t = set(tuples[:n_main]), set(tuples[:n_rob])
    gl = int(params.get("gl_iters", 32))
    pos = {s: i for i, s in enumerate(meta["sample_id"])}
    src = test[test["tuple_id"].isin(main_t)].sort_values("sample_id")
    src_idx = [pos[s] for s in src["sample_id"]]
    spk_src = SP.embed_speakers(m.spk, [mi["audio"][i] for i in src_idx])
    spk_of = dict(zip(src["sample_id"], spk_src, strict=True))

    # ---- units per condition (and their accuracy against the clean-AV iteration-2 targets)
    a_clean = [mi["a104"][i] for i in src_idx]
    lips = [mi["lip"][i] for i in src_idx]
    ref = [J.nearest(m.centres2, U.upsample_features(f))
           for f in U.layer_features(m.units1, a_clean, lips, layer=m.layer)]
    snrs = ["clean"] + [str(s) for s in sorted(mi["test_noisy"], key=lambda s: -int(s))]
    conds: dict[tuple[str, str], list[np.ndarray]] = {}
    unit_rows = []
    for snr in snrs:
        a_in = a_clean if snr == "clean" else [mi["test_noisy"][snr][s]["a104"] for s in src["sample_id"]]
        for mod in ("A", "V", "AV"):
            if mod == "V" and snr != "clean":
                conds[(mod, snr)] = conds[("V", "clean")]
            else:
                conds[(mod, snr)] = U.extract_units_batch(m.units, None if mod == "V" else a_in,
                                                          None if mod == "A" else lips)
            for sid, u, r in zip(src["sample_id"], conds[(mod, snr)], ref, strict=True):
                unit_rows.append({"sample_id": sid, "modality": mod, "snr": snr,
                                  "unit_acc": float(np.mean(np.asarray(u) == np.asarray(r)))})
    units_df = pd.DataFrame(unit_rows)

    # ---- translation systems: one row per (source utterance, target language, system)
    texts = {r["sample_id"]: r for r in src.to_dict("records")}
    rows = []

    def run_system(name: str, modality: str, snr: str, units_of, tuples_sel, translate_units: bool = True,
                   spk_override=None, oracle: bool = False, same_as: dict | None = None):
        sel = [s for s in src["sample_id"] if texts[s]["tuple_id"] in tuples_sel]
        items = [(s, tgt) for s in sel for tgt in LANGS if tgt != texts[s]["lang"]]
        if not items:
            return None
        su = {s: dedup(units_of[s]) for s in sel}
        if oracle:   # the target-language utterance's own units: the speech chain's upper bound
            of = {(r["tuple_id"], r["lang"]): sid for sid, r in texts.items()}
            items = [(s, t) for s, t in items if (texts[s]["tuple_id"], t) in of]
            if not items:
                return None
            out = [dedup(units_of[of[(texts[s]["tuple_id"], t)]]) for s, t in items]
        elif same_as is not None:   # the same inputs through the same deterministic beam search: reuse its output
            if same_as["items"] != items:
                raise RuntimeError(f"{name}: cannot reuse the translations of another system with other items")
            out = same_as["out"]
        elif translate_units:
            out = TR.translate(m.mt, m.vocab, [su[s] for s, _ in items], [texts[s]["lang"] for s, _ in items],
                               [t for _, t in items], beam=m.beam)
        else:
            out = [su[s] for s, _ in items]
        spk = np.stack([spk_of[s] if spk_override is None else spk_override(s) for s, _ in items])
        waves, heard, expanded = speak(m, out, spk, [t for _, t in items], gl, derive_seed(seed, "gl", name))
        refs = [C.normalize_text(texts[s][f"text_{t}"]) for s, t in items]
        raw, hyps, _ = asr_bleu(m, heard, [t for _, t in items], refs)
        for (s, t), h, hr, r, o in zip(items, hyps, raw, refs, out, strict=True):
            rows.append({"system": name, "modality": modality, "snr": snr, "sample_id": s,
                         "src": texts[s]["lang"], "tgt": t, "tuple_id": texts[s]["tuple_id"], "hyp": h, "ref": r,
                         "hyp_raw": hr, "n_units": len(o)})
        return {"items": items, "waves": waves, "heard": heard, "expanded": expanded, "out": out}

    def by_id(key):
        return dict(zip(src["sample_id"], conds[key], strict=True))

    plan = [("AV2AV", "AV", "clean", main_t), ("A2A", "A", "clean", main_t), ("V2AV", "V", "clean", rob_t)]
    plan += [(f"AV2AV@{s}", "AV", s, rob_t) for s in snrs[1:]] + [(f"A2A@{s}", "A", s, rob_t) for s in snrs[1:]]
    keep: dict[str, Any] = {}
    for name, mod, snr, tsel in tqdm(plan, desc="av2av: translate + speak", disable=not progress):
        keep[name] = run_system(name, mod, snr, by_id((mod, snr)), tsel)
    run_system("copy source units", "AV", "clean", by_id(("AV", "clean")), main_t, translate_units=False)
    run_system("oracle target units", "AV", "clean", by_id(("AV", "clean")), main_t, oracle=True)
    # zero-shot speaker check: the same translations with the speaker embedding zeroed
    zero_dim = spk_src.shape[1]
    keep["zero_spk"] = run_system("AV2AV, speaker embedding zeroed", "AV", "clean", by_id(("AV", "clean")), main_t,
                                  spk_override=lambda s: np.zeros(zero_dim, np.float32), same_as=keep["AV2AV"])
    cascade_rows(m, mi, src, texts, snrs, main_t, rob_t, rows, pos, params, seed)
    asr_check_rows(m, mi, test, pos, rows)
    trans = pd.DataFrame(rows)

    # ---- speaker similarity (zero-shot: the test speakers were never seen)
    spk_rows = speaker_rows(m, keep["AV2AV"], keep["zero_spk"], texts, spk_of)

    # ---- video: renderer and baselines on a subset of the clean AV2AV outputs
    video, clips = video_rows(m, mi, keep["AV2AV"], texts, pos, params, seed)
    return trans, units_df, pd.concat([video, spk_rows], ignore_index=True), clips


def asr_check_rows(m: Models, mi, test: pd.DataFrame, pos: dict, rows: list) -> None:
    """The recogniser on every clean held-out test utterance (all test tuples, not only the evaluated ones): how
    far ASR-BLEU can be trusted (table_asr, claim S1)."""
    from cvpr24.pipelines.av2av import corpus as C

    test = test.sort_values("sample_id")
    raw, hyps = m.transcribe([mi["mel"][pos[s]] for s in test["sample_id"]], test["lang"].tolist())
    for r, h, hr in zip(test.to_dict("records"), hyps, raw, strict=True):
        rows.append({"system": "ASR on real speech", "modality": "A", "snr": "clean", "sample_id": r["sample_id"],
                     "src": r["lang"], "tgt": r["lang"], "tuple_id": r["tuple_id"], "hyp": h,
                     "ref": C.normalize_text(r["text"]), "hyp_raw": hr, "n_units": 0})


def cascade_rows(m: Models, mi, src, texts, snrs, main_t, rob_t, rows, pos, params, seed) -> None:
    """ASR (our recogniser on the source speech) -> dictionary translation -> espeak-ng in the target language
    with the source speaker's voice settings -> ASR-BLEU: the strong reference of spec Sec. 6."""
    from cvpr24.pipelines.av2av import corpus as C
    from cvpr24.pipelines.av2av import espeak as E

    voices = {s["id"]: s for s in E.SPEAKERS}
    for snr in snrs:
        tsel = main_t if snr == "clean" else rob_t
        sel = [s for s in src["sample_id"] if texts[s]["tuple_id"] in tsel]
        mels = [mi["mel"][pos[s]] if snr == "clean" else mi["test_noisy"][snr][s]["mel"] for s in sel]
        src_raw, src_hyp = m.transcribe(mels, [texts[s]["lang"] for s in sel])
        items, heard, refs = [], [], []
        for s, h in zip(sel, src_hyp, strict=True):
            for t in LANGS:
                if t == texts[s]["lang"]:
                    continue
                mt = C.dictionary_translate(h, texts[s]["lang"], t) if h.strip() else ""
                wave = E.synthesize(mt, t, voices[texts[s]["speaker"]])[0] if mt else np.zeros(640 * 5, np.float32)
                items.append((s, t))
                heard.append(FE.log_mel(wave.astype(np.float32)))
                refs.append(C.normalize_text(texts[s][f"text_{t}"]))
        raw, hyps = m.transcribe(heard, [t for _, t in items])
        for (s, t), h, hr, r in zip(items, hyps, raw, refs, strict=True):
            rows.append({"system": "cascade" + ("" if snr == "clean" else f"@{snr}"), "modality": "A", "snr": snr,
                         "sample_id": s, "src": texts[s]["lang"], "tgt": t, "tuple_id": texts[s]["tuple_id"],
                         "hyp": h, "ref": r, "hyp_raw": hr, "n_units": 0})


def speaker_rows(m: Models, full: dict, zero: dict, texts: dict, spk_of: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per output: cosine with its source speaker's embedding and with the other test speakers' (the mean of
    their source utterances in the same language), with the source embedding and with it zeroed."""
    rows = []
    for name, run in (("source embedding", full), ("zeroed embedding", zero)):
        out_emb = SP.embed_speakers(m.spk, run["waves"])
        for (s, t), e in zip(run["items"], out_emb, strict=True):
            others = [spk_of[o] for o in spk_of
                      if texts[o]["speaker"] != texts[s]["speaker"] and texts[o]["lang"] == texts[s]["lang"]]
            if not others:
                continue
            other = np.mean(others, 0)
            other = other / max(np.linalg.norm(other), 1e-8)
            c_src, c_oth = float(e @ spk_of[s]), float(e @ other)
            rows.append({"kind": "speaker", "system": name, "sample_id": s, "tgt": t, "speaker": texts[s]["speaker"],
                         "cos_source": c_src, "cos_other": c_oth, "gap": c_src - c_oth})
    return pd.DataFrame(rows)


def video_rows(m: Models, mi, run: dict, texts: dict, pos: dict, params: dict, seed: int
               ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    from cvpr24.pipelines.av2av import visual as V

    n = int(params["video_clips"])
    shift = int(params.get("sync_shift_frames", 8))
    items = run["items"][:: max(1, len(run["items"]) // n)][:n]
    index = {it: k for k, it in enumerate(run["items"])}
    table = template_table(m, mi)
    rows, clips = [], {}
    gen_frames_all, real_frames = [], np.concatenate([mi["faces"][s] for s in sorted(mi["faces"])
                                                      if texts.get(s) is not None] or [np.zeros((0, 64, 64, 3),
                                                                                                np.uint8)])
    for c, it in enumerate(items):
        k = index[it]
        s = it[0]
        src_faces = mi["faces"][s]
        units50 = run["expanded"][k]
        mel = run["heard"][k]
        nfr = min(len(units50) // 2, len(mel) // 2)
        if nfr < FA.SYNC_T + 1:
            continue
        units50, mel = units50[: 2 * nfr], mel[: 2 * nfr]
        systems = {
            "AV-Renderer (ours)": FA.render_video(m.renderer, units50, src_faces),
            "w/o unit branch": FA.render_video(m.renderer0, units50, src_faces),
            f"time-shifted units (+{shift} frames)": FA.render_video(m.renderer, np.roll(units50, 2 * shift),
                                                                     src_faces),
            "source video unchanged": FA.pingpong(src_faces, nfr),
        }
        if table is not None:
            systems["viseme template (non-learned)"] = template_render(V, table, units50, src_faces,
                                                                     mi["bboxes"].get(s))
        for name, frames in systems.items():
            frames = frames[:nfr]
            ve, ae = FA.sync_embeddings(m.sync, frames, mel)
            d, conf, off, dist = FA.lse(ve, ae)
            rows.append({"kind": "video", "system": name, "sample_id": s, "tgt": it[1], "clip": c, "lse_d": d,
                         "lse_c": conf, "offset": off, "dist": [float(x) for x in dist]})
            if name == "AV-Renderer (ours)":
                gen_frames_all.append(frames)
            if name in ("AV-Renderer (ours)", "w/o unit branch", "viseme template (non-learned)"):
                rows[-1]["frames_key"] = f"{name}:{c}"
                clips.setdefault(f"{name}|frames", []).append(frames)
        clips.setdefault("clip_ids", []).append(f"{s}->{it[1]}")
        clips.setdefault("wave", []).append(run["waves"][k][: 640 * nfr])
        clips.setdefault("mel", []).append(mel)
        clips.setdefault("source_faces", []).append(src_faces)
        clips.setdefault("source_wave", []).append(mi["audio"][pos[s]])
    # real pairs: the sync reference (the test videos with their own speech)
    for s in sorted(mi["faces"]):
        if s not in texts:
            continue
        ve, ae = FA.sync_embeddings(m.sync, mi["faces"][s], mi["mel"][pos[s]])
        d, conf, off, dist = FA.lse(ve, ae)
        rows.append({"kind": "video", "system": "real video (test speakers)", "sample_id": s, "tgt": "",
                     "clip": -1, "lse_d": d, "lse_c": conf, "offset": off, "dist": [float(x) for x in dist]})
    df = pd.DataFrame(rows)
    if m.viseme is not None and len(real_frames):
        real_f = FA.viseme_features(m.viseme, real_frames)
        fid = {}
        for name in df["system"].unique():
            frames = clips.get(f"{name}|frames")
            if frames:
                fid[name] = FA.frechet_distance(FA.viseme_features(m.viseme, np.concatenate(frames)), real_f)
        df["fid_proxy"] = df["system"].map(fid)
    return df, {k: _object_vector(v) if isinstance(v, list) else v for k, v in clips.items()}


def _object_vector(items: list) -> np.ndarray:
    """A 1-D object array holding each item as it is: np.array(items, dtype=object) would stack equally shaped
    arrays (one clip, or clips of one length) into an n-D array of scalars."""
    out = np.empty(len(items), dtype=object)
    for i, x in enumerate(items):
        out[i] = x
    return out


def template_table(m: Models, mi) -> np.ndarray | None:
    """The non-learned renderer's lookup: the most frequent viseme of each unit over the renderer's training
    videos (unit at 50 Hz -> its video frame), from the unit extractor's clean AV units."""
    ids = [s for s in sorted(mi["visemes"]) if mi["meta"].set_index("sample_id").loc[s, "split"] == "train"]
    if not ids:
        return None
    pos = {s: i for i, s in enumerate(mi["meta"]["sample_id"])}
    units = U.extract_units_batch(m.units, [mi["a104"][pos[s]] for s in ids], [mi["lip"][pos[s]] for s in ids])
    counts = np.zeros((m.k, 12), np.int64)
    for s, u in zip(ids, units, strict=True):
        vis = mi["visemes"][s]
        for j, unit in enumerate(u):
            counts[int(unit), int(vis[min(j // 2, len(vis) - 1)])] += 1
    return counts.argmax(1)


def template_render(V, table: np.ndarray, units50: np.ndarray, src_faces: np.ndarray, bboxes) -> np.ndarray:
    n = len(units50) // 2
    idx = FA.pingpong(np.arange(len(src_faces)), n)   # the source frame (and its face box) behind each output frame
    vis = table[np.asarray(units50[0::2][:n], int)]
    return np.stack([V.draw_mouth(src_faces[i], V.VISEME_SHAPES[int(v)], None if bboxes is None else bboxes[i])
                     for i, v in zip(idx, vis, strict=True)])
