"""AV2AV end to end in the ci profile: the EspeakAV corpus is written in the manifest layout and read back by the
one loader, every model trains, tables / claims / figures / playable clips are written, trained models come back
from the job cache, and bad input (a missing corpus, audio at the wrong rate, audio and video of different
lengths, an unknown language) stops the run before anything is trained.

The ci run is the session's `ci_run("av2av")` (one real `kedro run` subprocess); the other runs go through
KedroSession in this process."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from tests.conftest import kedro_session_fails, kedro_session_run, make_project


@pytest.fixture(scope="module")
def av_run(ci_run):
    return ci_run("av2av")


@pytest.fixture(scope="module")
def av_project(av_run):
    return av_run.project


def test_ci_run_writes_tables_claims_figures_and_clips(av_run, av_project):
    rep = av_project / "reports" / "ci" / "av2av"
    for t in ("1", "2", "3", "4", "5", "asr"):
        assert (rep / f"table_{t}.md").is_file() and (rep / f"table_{t}.csv").is_file()
    t1 = pd.read_csv(rep / "table_1.csv").set_index("method")
    assert str(t1.loc["AV2AV (AV input)", "all_paper"]) == "not found"
    for row in ("AV2AV (AV input)", "A2A (audio-only input)", "copy source units"):
        assert np.isfinite(float(t1.loc[row, "all_ours"])), row               # measured
    t3 = pd.read_csv(rep / "table_3.csv").set_index("input")
    assert 0.0 <= float(t3.loc["AV (audio-visual)", "snr_clean_ours"]) <= 1.0
    claims = pd.read_csv(rep / "claims.csv", keep_default_na=False).set_index("id")
    assert {"C1", "C1b", "C2", "C2b", "C2c", "C2d", "C3", "C4", "C4b", "C5", "C5b", "C5c", "C6", "C6b", "C7",
            "S1"} <= set(claims.index)
    assert set(claims["verdict"]) <= {"PASS", "FAIL", "INCONCLUSIVE", "N/A"}
    for fig in ("strip", "snr", "sync_offsets", "training"):
        assert (rep / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    clips = sorted((rep / "clips").iterdir())
    assert any(p.suffix == ".mp4" for p in clips) and any(p.suffix == ".wav" for p in clips)
    import soundfile as sf

    wav = next(p for p in clips if p.name.endswith(".wav") and ".source" not in p.name)
    audio, sr = sf.read(wav)
    assert sr == 16000 and len(audio) > 0
    assert av_run.seconds < 240, f"ci run took {av_run.seconds:.0f} s (budget 60 s on 2 idle cores)"


def test_corpus_is_written_in_the_manifest_layout(av_project):
    from cvpr24.pipelines.av2av import data as D

    root = av_project / "data" / "ci" / "av2av" / "01_raw" / "corpus" / "espeakav"
    utts = D.load_split(root, "test", ["en", "es", "fr", "it", "pt"])
    assert len(utts) == 2 * 5
    u = utts[0]
    assert len(u["audio"]) == 640 * len(u["lip"]) and u["faces"].shape[1:] == (64, 64, 3)
    assert set((root / "test.lang").read_text().split()) == {"en", "es", "fr", "it", "pt"}
    assert next(root.glob("*/*.phn")).read_text().strip()


def test_trained_models_come_back_from_the_cache(av_project):
    kedro_session_run(av_project, "av2av", tags=["train"])
    log = pd.read_parquet(av_project / "data" / "ci" / "av2av" / "07_model_output" / "train_log.parquet")
    assert log["cached"].all(), log
    assert {"units", "asr", "speaker", "syncnet", "viseme", "translation", "vocoder", "renderer",
            "renderer_nounits"} == set(log["job"])


def test_report_prunes_clips_it_no_longer_writes(av_project):
    """A re-rendered report removes playable clips of an earlier run (another profile size, other test ids)."""
    clips = av_project / "reports" / "ci" / "av2av" / "clips"
    stale = [clips / "spk9_xx_to_yy.wav", clips / "spk9_xx_to_yy.mp4"]
    for p in stale:
        p.write_bytes(b"stale")
    kept = sorted(p.name for p in clips.iterdir() if p not in stale)
    kedro_session_run(av_project, "av2av", tags=["report"])
    assert not any(p.exists() for p in stale)
    assert sorted(p.name for p in clips.iterdir()) == kept


def test_missing_corpus_says_what_to_do(tmp_path):
    project = make_project(tmp_path / "proj")
    text = kedro_session_fails(project, "av2av", {"av2av": {"data": {
        "source": "real", "real": {"root": str(tmp_path / "nowhere")}}}})
    assert "nowhere" in text and "README" in text, text[-3000:]
    assert not (project / "data" / "ci" / "av2av" / "05_model_input").exists()


def _real_copy(av_project, dest):
    src = av_project / "data" / "ci" / "av2av" / "01_raw" / "corpus" / "espeakav"
    shutil.copytree(src, dest)
    return dest


def _run_real(tmp_path, root, name):
    project = make_project(tmp_path / name)
    text = kedro_session_fails(project, "av2av", {"av2av": {"data": {"source": "real", "real": {"root": str(root)}}}})
    assert not (project / "data" / "ci" / "av2av" / "06_models").exists()
    return text


def test_bad_audio_stops_before_training(tmp_path, av_project):
    import soundfile as sf

    from cvpr24.pipelines.av2av import data as D

    # audio at 22.05 kHz
    root = _real_copy(av_project, tmp_path / "rate")
    wav = sorted(root.glob("en/*.wav"))[0]
    audio, _ = sf.read(wav, dtype="float32")
    sf.write(wav, audio, 22050)
    text = _run_real(tmp_path, root, "p1")
    assert wav.name in text and "16" in text and "ffmpeg" in text, text[-3000:]

    # audio twice as long as its video
    root = _real_copy(av_project, tmp_path / "length")
    wav = sorted(root.glob("es/*.wav"))[0]
    audio = D.read_audio(wav)
    D.write_audio(wav, np.concatenate([audio, audio]))
    text = _run_real(tmp_path, root, "p2")
    assert wav.stem in text and "frames" in text, text[-3000:]

    # an unknown language token
    root = _real_copy(av_project, tmp_path / "lang")
    lang = root / "test.lang"
    lines = lang.read_text().splitlines()
    lang.write_text("\n".join(["xx", *lines[1:]]) + "\n")
    text = _run_real(tmp_path, root, "p3")
    assert "'xx'" in text and "known languages" in text, text[-3000:]
