"""AV2AV's table cells, claim measurements, figures and playable clips; core renders the tables, the verdicts and
the README (`cvpr24.core.reporting`).

ASR-BLEU cells are the mean over translation directions of each direction's corpus BLEU (sacrebleu on
normalised text); claims on ASR-BLEU use the corpus BLEU of the whole condition. Everything is measured on the
test tuples, spoken by the two held-out speakers; nothing here feeds back into training.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pandas as pd

from cvpr24.core.claims import Measurement, evaluate_claims
from cvpr24.core.reporting import Figure, TableRows, build_report, figure_png
from cvpr24.pipelines.av2av import asr as R
from cvpr24.pipelines.av2av.common import FPS, SR

SYSTEMS_T1 = {"AV2AV (AV input)": "AV2AV", "A2A (audio-only input)": "A2A", "V input (lips only)": "V2AV",
              "cascade (ASR → dictionary MT → espeak-ng)": "cascade", "copy source units": "copy source units",
              "oracle: the target speech's own units (speech-chain bound)": "oracle target units"}
DATA = "EspeakAV test tuples, held-out speakers"
FLOOR_BLEU = 1.0   # below this on both sides, a difference-of-BLEU claim has no signal (N/A, not PASS)


def _group(src: str, tgt: str) -> str:
    return "x_en" if tgt == "en" else ("en_x" if src == "en" else "x_y")


def direction_bleu(tr: pd.DataFrame, system: str, tuples: set[str] | None = None) -> pd.Series:
    """Corpus BLEU per direction ("es-en", ...) of one system (on the given tuples)."""
    sub = tr[tr["system"] == system]
    if tuples is not None:
        sub = sub[sub["tuple_id"].isin(tuples)]
    return pd.Series({f"{s}-{t}": R.bleu(g["hyp"].tolist(), g["ref"].tolist())
                      for (s, t), g in sub.groupby(["src", "tgt"], sort=True)}, dtype=float)


def corpus_bleu(tr: pd.DataFrame, system: str, tuples: set[str] | None = None, tgt: str | None = None) -> float:
    sub = tr[tr["system"] == system]
    if tuples is not None:
        sub = sub[sub["tuple_id"].isin(tuples)]
    if tgt is not None:
        sub = sub[sub["tgt"] == tgt]
    return R.bleu(sub["hyp"].tolist(), sub["ref"].tolist()) if len(sub) else float("nan")


def robust_tuples(tr: pd.DataFrame) -> set[str]:
    return set(tr.loc[tr["system"] == "AV2AV@0", "tuple_id"]) or set(tr.loc[tr["system"] == "V2AV", "tuple_id"])


def snr_list(tr: pd.DataFrame) -> list[str]:
    noisy = sorted({s for s in tr["snr"] if s != "clean"}, key=lambda s: -int(s))
    return ["clean", *noisy]


def _name(system: str, snr: str) -> str:
    return system if snr == "clean" else f"{system}@{snr}"


def table_rows(tr: pd.DataFrame, units: pd.DataFrame, av: pd.DataFrame, model_input: dict, train: dict,
               evaluate: dict, runtime: dict) -> pd.DataFrame:
    rows = TableRows()
    for row, system in SYSTEMS_T1.items():
        per = direction_bleu(tr, system)
        if per.empty:
            for key in ("x_en", "en_x", "x_y", "all"):
                rows.add("table_1", row, key, None, note="not run in this profile")
            continue
        grp = pd.Series([_group(*d.split("-")) for d in per.index], index=per.index)
        for key in ("x_en", "en_x", "x_y"):
            rows.add("table_1", row, key, per[grp == key], over="directions", data=DATA)
        rows.add("table_1", row, "all", per, over="directions", data=DATA)
    rob = robust_tuples(tr)
    for row, system in (("A (audio only)", "A2A"), ("V (lips only)", "V2AV"), ("AV (audio-visual)", "AV2AV"),
                        ("cascade (audio)", "cascade")):
        for snr in snr_list(tr):
            name = "V2AV" if system == "V2AV" else _name(system, snr)
            per = direction_bleu(tr, name, rob)
            rows.add("table_2", row, f"snr_{snr}", per if len(per) else None, over="directions", data=DATA,
                     note="not run in this profile")
    for mod, row in (("A", "A (audio only)"), ("V", "V (lips only)"), ("AV", "AV (audio-visual)")):
        for snr in snr_list(tr):
            sub = units[(units["modality"] == mod) & (units["snr"] == snr)]
            rows.add("table_3", row, f"snr_{snr}", sub.set_index("sample_id")["unit_acc"], over="utterances",
                     data=DATA)
    vid = av[av["kind"] == "video"]
    for system, g in vid.groupby("system", sort=False):
        rows.add("table_4", system, "lse_d", g["lse_d"], over="clips", data=DATA)
        rows.add("table_4", system, "lse_c", g["lse_c"], over="clips", data=DATA)
        fid = g["fid_proxy"].dropna() if "fid_proxy" in g else pd.Series(dtype=float)
        rows.add("table_4", system, "fid_proxy", float(fid.iloc[0]) if len(fid) else None, over="",
                 note="FID-proxy on the renderers' frames only")
    spk = av[av["kind"] == "speaker"]
    for system, g in spk.groupby("system", sort=False):
        rows.add("table_5", system, "cos_source", g["cos_source"], over="outputs", data=DATA)
        rows.add("table_5", system, "cos_other", g["cos_other"], over="outputs", data=DATA)
        rows.add("table_5", system, "win_rate", float(100 * (g["gap"] > 0).mean()), over="", data=DATA)
    real = tr[tr["system"] == "ASR on real speech"]
    for lang, g in real.groupby("src", sort=True):
        rows.add("table_asr", lang, "wer", 100 * R.wer(g["hyp"].tolist(), g["ref"].tolist()), over="", data=DATA)
        rows.add("table_asr", lang, "cer", 100 * R.cer(g["hyp"].tolist(), g["ref"].tolist()), over="", data=DATA)
        if "hyp_raw" in g:
            raw = g["hyp_raw"].fillna("").tolist()
            rows.add("table_asr", lang, "wer_raw", 100 * R.wer(raw, g["ref"].tolist()), over="", data=DATA)
            rows.add("table_asr", lang, "cer_raw", 100 * R.cer(raw, g["ref"].tolist()), over="", data=DATA)
        rows.add("table_asr", lang, "n", float(len(g)), over="", data=DATA)
    return rows.frame(profile=runtime.get("profile", ""), data_fingerprint=str(model_input.get("fingerprint", "")),
                      params={"train": {k: v for k, v in train.items() if k != "checkpoint_dir"},
                              "evaluate": evaluate})


# ------------------------------------------------------------------------------------------- claims
def measure_claims(tr: pd.DataFrame, units: pd.DataFrame, av: pd.DataFrame, k: int) -> dict[str, Measurement]:
    m: dict[str, Measurement] = {}
    rob = robust_tuples(tr)
    noisy = [s for s in snr_list(tr) if s != "clean" and int(s) <= 0]
    c1 = {f"{s} dB": corpus_bleu(tr, f"AV2AV@{s}", rob) - corpus_bleu(tr, f"A2A@{s}", rob) for s in noisy}
    m["C1"] = Measurement(c1, ", ".join(f"{s} dB: AV {corpus_bleu(tr, f'AV2AV@{s}', rob):.1f} vs A "
                                        f"{corpus_bleu(tr, f'A2A@{s}', rob):.1f}" for s in noisy),
                          note="" if noisy else "no SNR <= 0 dB in this profile")
    av_c, a_c = corpus_bleu(tr, "AV2AV"), corpus_bleu(tr, "A2A")
    floor = f"AV {av_c:.1f} and A {a_c:.1f} BLEU: both at the floor, so agreement says nothing"
    m["C1b"] = (Measurement({}, note=floor) if max(av_c, a_c) < FLOOR_BLEU
                else Measurement({"clean": abs(av_c - a_c)}, f"AV {av_c:.1f} vs A {a_c:.1f} BLEU"))

    def acc(mod: str, snr: str) -> float:
        return float(units[(units["modality"] == mod) & (units["snr"] == snr)]["unit_acc"].mean())

    m["C2"] = Measurement({"A": acc("A", "clean"), "AV": acc("AV", "clean")},
                          f"A {acc('A', 'clean'):.3f}, AV {acc('AV', 'clean'):.3f}")
    m["C2b"] = Measurement({f"{s} dB": acc("AV", s) - acc("A", s) for s in noisy},
                           ", ".join(f"{s} dB: AV {acc('AV', s):.3f} vs A {acc('A', s):.3f}" for s in noisy))
    m["C2c"] = Measurement({"V": acc("V", "clean") * k / 3.0}, f"V-only accuracy {acc('V', 'clean'):.3f}, "
                                                               f"3/K = {3.0 / k:.3f}")
    v_bleu = corpus_bleu(tr, "V2AV")
    m["C2d"] = Measurement({"V": v_bleu}, f"V input ASR-BLEU {v_bleu:.2f}")
    langs = sorted(tr.loc[tr["system"] == "AV2AV", "tgt"].unique())
    m["C3"] = Measurement({} if max(av_c, a_c) < FLOOR_BLEU else
                          {t: corpus_bleu(tr, "AV2AV", tgt=t) - corpus_bleu(tr, "A2A", tgt=t) for t in langs},
                          ", ".join(f"→{t}: AV {corpus_bleu(tr, 'AV2AV', tgt=t):.1f} vs A "
                                    f"{corpus_bleu(tr, 'A2A', tgt=t):.1f}" for t in langs),
                          note=floor if max(av_c, a_c) < FLOOR_BLEU else "")
    m["C4"] = Measurement({"AV2AV": av_c}, f"corpus ASR-BLEU over {len(direction_bleu(tr, 'AV2AV'))} directions")
    cp = corpus_bleu(tr, "copy source units")
    m["C4b"] = Measurement({"AV2AV − copy": av_c - cp}, f"{av_c:.1f} vs {cp:.1f} BLEU")
    vid = av[av["kind"] == "video"]
    vid = vid.assign(clip=vid["clip"].astype(int))   # clip ids, not floats (the speaker rows have none)

    def per_clip(system: str, col: str) -> pd.Series:
        return vid[vid["system"] == system].set_index("clip")[col]

    ours = "AV-Renderer (ours)"
    shifted = next((s for s in vid["system"].unique() if s.startswith("time-shifted")), None)
    m["C5"] = Measurement(per_clip("source video unchanged", "lse_d") - per_clip(ours, "lse_d"),
                          f"LSE-D {per_clip(ours, 'lse_d').mean():.3f} vs source video "
                          f"{per_clip('source video unchanged', 'lse_d').mean():.3f}")
    m["C5b"] = Measurement((per_clip(shifted, "lse_d") - per_clip(ours, "lse_d")) if shifted else {},
                           f"LSE-D {per_clip(ours, 'lse_d').mean():.3f} vs shifted "
                           f"{per_clip(shifted, 'lse_d').mean():.3f}" if shifted else "")
    m["C5c"] = Measurement(per_clip(ours, "lse_c") - per_clip("source video unchanged", "lse_c"),
                           f"LSE-C {per_clip(ours, 'lse_c').mean():.3f} vs source video "
                           f"{per_clip('source video unchanged', 'lse_c').mean():.3f}")
    m["C7"] = Measurement(per_clip("w/o unit branch", "lse_d") - per_clip(ours, "lse_d"),
                          f"LSE-D w/o units {per_clip('w/o unit branch', 'lse_d').mean():.3f} vs "
                          f"{per_clip(ours, 'lse_d').mean():.3f}")
    spk = av[av["kind"] == "speaker"]
    full = spk[spk["system"] == "source embedding"]
    kept = len(full) and float((full["gap"] > 0).mean()) >= 0.8
    for cid, system in (("C6", "source embedding"), ("C6b", "zeroed embedding")):
        if cid == "C6b" and not kept:   # nothing to remove: C6's voice gap is not there
            m[cid] = Measurement({}, note="C6 shows no speaker gap to remove, so zeroing the embedding tests nothing")
            continue
        g = spk[spk["system"] == system]
        rate = float((g["gap"] > 0).mean()) if len(g) else float("nan")
        m[cid] = Measurement({"outputs": rate}, f"{rate:.0%} of {len(g)} outputs closer to their source speaker; "
                                                f"mean gap {g['gap'].mean():.3f}" if len(g) else "")
    real = tr[tr["system"] == "ASR on real speech"]
    m["S1"] = Measurement({lang: 100 * R.wer(g["hyp"].tolist(), g["ref"].tolist())
                           for lang, g in real.groupby("src", sort=True)}, "WER (%) per language")
    return m


# ------------------------------------------------------------------------------------------ figures
def figure_strip(clips: dict, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    src, gen = clips["source_faces"][0], clips["AV-Renderer (ours)|frames"][0]
    n = 8
    fig, ax = plt.subplots(3, 1, figsize=(9, 5.6), gridspec_kw={"height_ratios": [1, 1, 1.2]})
    for a, frames, title in ((ax[0], src, "source video"), (ax[1], gen, f"translated ({clips['clip_ids'][0]})")):
        idx = np.linspace(0, len(frames) - 1, n).astype(int)
        a.imshow(np.concatenate([frames[i] for i in idx], axis=1))
        a.set_title(title + f": frames {', '.join(map(str, idx))} at {FPS} fps", fontsize=9)
        a.axis("off")
    mel = clips["mel"][0]
    im = ax[2].imshow(mel.T, origin="lower", aspect="auto", extent=(0, len(mel) / 50, 0, mel.shape[1]))
    ax[2].set_xlabel("time (s)")
    ax[2].set_ylabel("mel bin")
    ax[2].set_title("translated speech (Griffin-Lim), log-mel", fontsize=9)
    fig.colorbar(im, ax=ax[2], label="log magnitude")
    fig.tight_layout()
    return figure_png(fig, dpi)


def figure_snr(tr: pd.DataFrame, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    rob = robust_tuples(tr)
    snrs = snr_list(tr)
    x = [30 if s == "clean" else int(s) for s in snrs]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, system, style in (("A input", "A2A", "o-"), ("AV input", "AV2AV", "s-"), ("cascade", "cascade", "^--")):
        ax.plot(x, [corpus_bleu(tr, _name(system, s), rob) for s in snrs], style, label=label)
    ax.axhline(corpus_bleu(tr, "V2AV", rob), color="grey", ls=":", label="V input (no audio)")
    ax.set_xticks(x, ["clean" if s == "clean" else s for s in snrs])
    ax.set_xlabel("babble SNR (dB)")
    ax.set_ylabel("ASR-BLEU")
    ax.set_title("ASR-BLEU against noise (paper: not found)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig, dpi)


def figure_offsets(av: pd.DataFrame, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    vid = av[(av["kind"] == "video") & av["dist"].notna()]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for system, g in vid.groupby("system", sort=False):
        d = np.stack([np.asarray(v, float) for v in g["dist"]]).mean(0)
        off = np.arange(len(d)) - len(d) // 2
        ax.plot(off, d, label=system)
    ax.set_xlabel("audio offset (video frames)")
    ax.set_ylabel("mean SyncNet distance")
    ax.set_title("Sync-offset curves (LSE-D = minimum, LSE-C = median − minimum)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig, dpi)


def figure_training(history: pd.DataFrame, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    jobs = [j for j in history["job_id"].dropna().unique()]
    fig, axes = plt.subplots(1, len(jobs) or 1, figsize=(2.2 * max(1, len(jobs)), 2.4), squeeze=False)
    for a, j in zip(axes[0], jobs, strict=False):
        h = history[(history["job_id"] == j) & history["loss"].notna()]
        for stage, g in h.groupby("stage", sort=False):
            a.plot(g["step"], g["loss"], label=str(stage))
        a.set_title(j, fontsize=8)
        a.set_xlabel("step", fontsize=7)
        a.tick_params(labelsize=6)
    axes[0][0].set_ylabel("training loss", fontsize=7)
    fig.tight_layout()
    return figure_png(fig, dpi)


# ---------------------------------------------------------------------------------------- clip files
def wav_bytes(wave: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.asarray(wave, np.float32), -1, 1), SR, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def mp4_bytes(frames: np.ndarray, wave: np.ndarray) -> bytes:
    """Frames muxed with the speech (libx264 + aac), bit-exact flags so the bytes do not carry a timestamp."""
    import tempfile
    from pathlib import Path

    import imageio_ffmpeg

    with tempfile.TemporaryDirectory() as tmp:
        wav, out = Path(tmp) / "a.wav", Path(tmp) / "v.mp4"
        wav.write_bytes(wav_bytes(wave))
        h, w = frames.shape[1:3]
        writer = imageio_ffmpeg.write_frames(str(out), (w, h), fps=FPS, macro_block_size=1, audio_path=str(wav),
                                             audio_codec="aac", output_params=["-crf", "18", "-threads", "1",
                                                                               "-fflags", "+bitexact",
                                                                               "-map_metadata", "-1"])
        writer.send(None)
        for f in frames:
            writer.send(np.ascontiguousarray(f))
        writer.close()
        return out.read_bytes()


def render(tr: pd.DataFrame, units: pd.DataFrame, av: pd.DataFrame, clips: dict, rows: pd.DataFrame,
           train_log: pd.DataFrame, history: pd.DataFrame, paper: dict[str, Any], params: dict[str, Any],
           train: dict[str, Any], runtime: dict[str, Any]) -> dict[str, str | bytes]:
    dpi = int(params.get("figure_dpi", 110))
    k = int(train["units"]["iter1"]["K"])
    claims = evaluate_claims(paper, measure_claims(tr, units, av, k))
    figures = [Figure("snr", "ASR-BLEU of the translated speech against babble SNR, by input modality (test "
                             "tuples of the robustness table).", figure_snr(tr, dpi))]
    if "source_faces" in clips and len(clips["source_faces"]):
        figures.insert(0, Figure("strip", "A source clip and its translation: frames of the source video and of "
                                          "the AV-Renderer's output, and the translated speech's log-mel.",
                                 figure_strip(clips, dpi)))
    if (av["kind"] == "video").any():
        figures.append(Figure("sync_offsets", "SyncNet distance against the audio offset, mean over clips.",
                              figure_offsets(av, dpi)))
    figures.append(Figure("training", "Training loss of every model.", figure_training(history, dpi)))
    files: dict[str, str | bytes] = {"translations.csv": tr.to_csv(index=False)}
    for i in range(min(int(params.get("playable_clips", 3)), len(clips.get("clip_ids", [])))):
        name = str(clips["clip_ids"][i]).replace("->", "_to_")
        files[f"clips/{name}.wav"] = wav_bytes(clips["wave"][i])
        files[f"clips/{name}.mp4"] = mp4_bytes(clips["AV-Renderer (ours)|frames"][i], clips["wave"][i])
        files[f"clips/{name}.source.wav"] = wav_bytes(clips["source_wave"][i])
    times = train_log.set_index("job")[["seconds", "cached"]]
    sections = [("Jobs and training time", f"{len(train_log)} models ({int(train_log['cached'].sum())} read from "
                                           f"the job cache); seconds of training:\n\n{times.to_markdown()}\n\n"
                                           "`translations.csv` holds every transcript (system, direction, "
                                           "hypothesis, reference); `clips/` the playable translations.")]
    return build_report("av2av", paper, rows, claims, profile=runtime.get("profile", "base"), figures=figures,
                        sections=sections, files=files)
