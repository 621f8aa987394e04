"""Tests of the audio renderer substitute: length regulator, durations, unit-to-mel, Griffin-Lim, speaker encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvpr24.pipelines.av2av.common import run_lengths
from cvpr24.pipelines.av2av.features import log_mel
from cvpr24.pipelines.av2av.speech import (
    SpeakerEncoder,
    UnitToMel,
    durations_from_log,
    embed_speakers,
    fit_speaker_encoder,
    fit_unit_to_mel,
    griffin_lim,
    length_regulate,
    synthesize_mel,
)

SR = 16000
pytestmark = pytest.mark.usefixtures("one_thread")


def test_length_regulate_repeats_and_lengths():
    h = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    d = torch.tensor([[2, 0, 3], [1, 4, 9]])
    out, lens = length_regulate(h, d, lengths=torch.tensor([3, 2]))
    assert lens.tolist() == [5, 5]
    assert out.shape == (2, 5, 2)
    assert torch.equal(out[0], torch.stack([h[0, 0], h[0, 0], h[0, 2], h[0, 2], h[0, 2]]))
    assert torch.equal(out[1], torch.stack([h[1, 0]] + [h[1, 1]] * 4))
    with pytest.raises(ValueError):
        length_regulate(h, d[:, :2])


def test_durations_official_rule_and_at_least_one():
    pred = torch.log1p(torch.tensor([0.0, 0.4, 2.6, 3.0, -5.0]))
    pred[-1] = -10.0
    assert durations_from_log(pred).tolist() == [1, 1, 3, 3, 1]
    # the official order (cast, then clamp): an overflowing prediction still gives 1, never a negative length
    assert durations_from_log(torch.tensor([50.0])).tolist() == [1]


def _toy_items(n=24, t=60, seed=0):
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(8, 80)).astype(np.float32) * 2
    items = []
    for i in range(n):
        runs = rng.integers(1, 5, size=t)
        units = np.repeat(rng.integers(0, 8, size=t), runs)[:t]
        spk = np.zeros(4, np.float32)
        spk[i % 2] = 1.0
        mel = centre[units] + (1.0 if i % 2 else -1.0)
        items.append({"units50": units, "mel": mel, "spk_emb": spk, "lang": "en" if i % 2 else "fr"})
    return items


def test_unit_to_mel_fits_toy_mapping_and_synthesizes():
    items = _toy_items()
    cfg = {"steps": 150, "batch": 8, "n_units": 8, "hidden": 64, "unit_dim": 32, "dur_hidden": 32, "lr": 3e-3}
    sd, hist = fit_unit_to_mel(items, cfg, seed=0)
    assert hist[-1]["mel_l1"] < 0.35 * hist[0]["mel_l1"]
    model = UnitToMel.from_state_dict(sd)
    vals = [run_lengths(it["units50"])[0] for it in items[:3]]
    spk = np.stack([it["spk_emb"] for it in items[:3]])
    mels, durs = synthesize_mel(model, vals, spk, [it["lang"] for it in items[:3]], return_durations=True)
    for m, d, v in zip(mels, durs, vals, strict=True):
        assert d.min() >= 1 and len(d) == len(v)
        assert m.shape == (int(d.sum()), 80) and m.dtype == np.float32
    # decoded with the true durations, the mel is close to the target
    it = items[0]
    v, lens = run_lengths(it["units50"])
    model.eval()
    e = model.embed(torch.tensor([v]), torch.tensor([2]))  # "fr"
    with torch.no_grad():
        mel, _ = model.decode(e, torch.tensor([lens]), torch.tensor([len(v)]), torch.tensor(it["spk_emb"])[None])
    err = np.abs(mel[0].numpy() - it["mel"]).mean()
    assert err < 0.5, err


def test_fit_unit_to_mel_rejects_bad_config_and_items():
    items = _toy_items(n=2)
    with pytest.raises(ValueError, match="bogus"):
        fit_unit_to_mel(items, {"bogus": 1}, seed=0)
    with pytest.raises(ValueError, match="n_units"):
        fit_unit_to_mel(items, {"n_units": 4, "steps": 1}, seed=0)
    bad = [dict(items[0], mel=items[0]["mel"][:-1])]
    with pytest.raises(ValueError, match="mel"):
        fit_unit_to_mel(bad, {"n_units": 8, "steps": 1}, seed=0)


def _chirp(seconds=2.0, f0=300.0, f1=1500.0):
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds))
    return (0.3 * np.sin(phase) + 0.1 * np.sin(2.3 * phase)).astype(np.float32)


def test_griffin_lim_reconstructs_mel_and_length():
    waves = [_chirp(1.28), _chirp(0.64, 800, 400)]
    mels = [log_mel(w) for w in waves]
    outs = griffin_lim(mels, n_iter=32, seed=0)
    assert [len(o) for o in outs] == [len(w) for w in waves]
    for m, o in zip(mels, outs, strict=True):
        m2 = log_mel(o)
        active = m > m.max() - 3.0  # compare where the chirp is (within ~26 dB of the peak)
        err = np.abs(m2 - m)[active].mean()
        assert err < 0.25, err
        # the iterations matter: the random initial phase alone is much worse
        m0 = log_mel(griffin_lim([m], n_iter=0, seed=0)[0])
        assert np.abs(m0 - m)[active].mean() > 2 * err
    again = griffin_lim(mels, n_iter=32, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(outs, again, strict=True))


def test_griffin_lim_chunks_equal_one_padded_batch(monkeypatch):
    """Length-sorted chunks, each padded to its longest + a margin, give bit for bit what one batch padded to the
    longest utterance gives (the same initial phase per utterance, the same window envelope where it matters)."""
    from cvpr24.pipelines.av2av import speech as SP

    rng = np.random.default_rng(3)
    lens = [31, 7, 58, 12, 58, 40, 3, 25, 49, 18, 33]      # unsorted, a tie, more than one chunk
    mels = [rng.normal(-4.0, 2.0, (n, 80)).astype(np.float32) for n in lens]
    monkeypatch.setattr(SP, "GL_CHUNK", 4)
    chunked = SP.griffin_lim(mels, n_iter=6, seed=5)
    monkeypatch.setattr(SP, "GL_CHUNK", 10**6)
    monkeypatch.setattr(SP, "_GL_MARGIN", 10**6)
    one = SP.griffin_lim(mels, n_iter=6, seed=5)
    assert [len(o) for o in chunked] == [n * 320 for n in lens]
    assert all(np.array_equal(a, b) for a, b in zip(chunked, one, strict=True))
    # the margin is what makes it exact: chunks cut at their longest utterance differ
    monkeypatch.setattr(SP, "GL_CHUNK", 4)
    monkeypatch.setattr(SP, "_GL_MARGIN", 0)
    tight = SP.griffin_lim(mels, n_iter=6, seed=5)
    assert not all(np.array_equal(a, b) for a, b in zip(tight, one, strict=True))


def _voice(f0, seconds, rng):
    t = np.arange(int(seconds * SR)) / SR
    vib = f0 * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    phase = 2 * np.pi * np.cumsum(vib) / SR
    w = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 4) * t + rng.uniform(0, 6)) ** 2
    return (0.1 * w * env + 0.005 * rng.normal(size=t.size)).astype(np.float32)


def test_speaker_encoder_separates_two_voices():
    rng = np.random.default_rng(0)
    waves, ids = [], []
    for i in range(12):
        spk = i % 2
        waves.append(_voice([120.0, 230.0][spk] * rng.uniform(0.95, 1.05), rng.uniform(1.7, 2.2), rng))
        ids.append(f"s{spk}")
    sd, hist = fit_speaker_encoder(waves, ids, {"steps": 25, "batch": 8, "hidden": 32, "emb_dim": 16}, seed=0)
    model = SpeakerEncoder.from_state_dict(sd)
    test_w = [_voice(f, 2.0, rng) for f in (118.0, 125.0, 225.0, 235.0)]
    emb = embed_speakers(model, test_w)
    assert emb.shape == (4, 16)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    assert min(sim[0, 1], sim[2, 3]) > max(sim[0, 2], sim[0, 3], sim[1, 2], sim[1, 3])
    with pytest.raises(ValueError, match="2 distinct"):
        fit_speaker_encoder(waves[:2], ["a", "a"], {"steps": 1}, seed=0)


def test_training_is_bit_identical_run_to_run():
    items = _toy_items(n=6, t=30)
    cfg = {"steps": 3, "batch": 4, "n_units": 8, "hidden": 16, "unit_dim": 8, "dur_hidden": 8}
    a, _ = fit_unit_to_mel(items, cfg, seed=3)
    b, _ = fit_unit_to_mel(items, cfg, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_unit_to_mel_resumes_from_checkpoint(tmp_path):
    from cvpr24.core.training import Checkpointer

    items = _toy_items(n=6, t=30)
    cfg = {"steps": 4, "batch": 4, "n_units": 8, "hidden": 16, "unit_dim": 8, "dur_hidden": 8, "every": 2}
    ref, _ = fit_unit_to_mel(items, cfg, seed=1)
    ckpt = Checkpointer(tmp_path)
    fit_unit_to_mel(items, cfg, seed=1, checkpointer=ckpt)  # leaves the step-2 checkpoint behind
    assert ckpt.checkpoints()
    resumed, hist = fit_unit_to_mel(items, cfg, seed=1, checkpointer=ckpt)
    assert all(torch.equal(ref[k], resumed[k]) for k in ref)
