"""Audio side of the AV-Renderer substitute (spec 2.4 and 8.6): speaker encoder, unit-to-mel model, Griffin-Lim.

* `SpeakerEncoder`: the GE2E speaker encoder of the official code (model_speaker_encoder.py: 40-mel 25 ms / 10 ms
  -> LSTM -> Linear -> ReLU -> L2 norm, partial utterances of 160 frames averaged) shrunk to a 2-layer LSTM 128 and a
  64-d embedding, trained with a softmax head over the training speakers (spec 8.6) instead of the GE2E loss.
* `UnitToMel`: the CodeHiFiGAN substitute. As in fairseq's `CodeGenerator` (dur_prediction=True) a duration
  predictor (2 conv layers, hidden 128, kernel 3, dropout 0.5, ReLU + LayerNorm) reads the unit embedding of each
  DE-DUPLICATED unit and predicts log(1 + d) (MSE); at inference d = clamp(round(exp(pred) - 1), min 1); the
  unit hiddens are repeated by their durations (`length_regulate`). Instead of the HiFi-GAN generator, 3 residual
  conv layers map the regulated sequence (+ the projected speaker embedding) to an 80-bin log-mel at 50 Hz (one
  frame per 20 ms unit, `features.log_mel`), trained with L1. Deviation: one multilingual model with a language
  embedding instead of one vocoder per language (cheaper on CPU; same information); HiFi-GAN is kept for the full
  profile.
* `griffin_lim`: waveform from the log-mel by the pseudo-inverse of the mel filterbank and (fast, momentum 0.99,
  as librosa) Griffin-Lim, batched in torch (spec 8.6 names librosa; torch is batched and has no extra dependency).

Rates (common.py): 2T units = 2T mel frames (hop 320) = 640T samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cvpr24.core.training import Checkpointer, TrainState, train_loop
from cvpr24.pipelines.av2av.common import LANGS, MEL_HOP, N_MELS, SR, run_lengths
from cvpr24.pipelines.av2av.features import mel_filterbank

SPK_N_FFT = 400        # 25 ms window
SPK_HOP = 160          # 10 ms hop
SPK_MELS = 40
PARTIAL = 160          # GE2E partial utterance (1.6 s)
GL_N_FFT = 1024


# ---------------------------------------------------------------------------------------------------------------
# config helpers
def _config(cfg: dict[str, Any] | None, defaults: dict[str, Any], what: str) -> dict[str, Any]:
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise ValueError(f"{what}: unknown config key(s) {unknown}; allowed keys are {sorted(defaults)}")
    out = {**defaults, **cfg}
    for key, default in defaults.items():
        val = out[key]
        if isinstance(default, bool):
            if not isinstance(val, bool):
                raise ValueError(f"{what}: config key {key!r} must be a bool, got {val!r}")
        elif isinstance(default, (int, float)):
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not math.isfinite(val):
                raise ValueError(f"{what}: config key {key!r} must be a number, got {val!r}")
            if key != "weight_decay" and key != "dropout" and val <= 0:
                raise ValueError(f"{what}: config key {key!r} must be > 0, got {val!r}")
            if key in ("dropout", "weight_decay") and val < 0:
                raise ValueError(f"{what}: config key {key!r} must be >= 0, got {val!r}")
            if isinstance(default, int):
                if float(val) != int(val):
                    raise ValueError(f"{what}: config key {key!r} must be an integer, got {val!r}")
                out[key] = int(val)
    return out


def lang_index(lang: str | int, n_langs: int = len(LANGS)) -> int:
    """A language code from common.LANGS (or an index) -> its index."""
    if isinstance(lang, str):
        if lang not in LANGS:
            raise ValueError(f"unknown language {lang!r}; expected one of {LANGS}")
        return LANGS.index(lang)
    idx = int(lang)
    if not 0 <= idx < n_langs:
        raise ValueError(f"language index {idx} out of range [0, {n_langs})")
    return idx


def _check_wave(w: np.ndarray, name: str) -> np.ndarray:
    w = np.asarray(w)
    if w.ndim != 1 or w.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D waveform (16 kHz mono), got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name}: waveform contains NaN/inf")
    return w.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# speaker encoder
def _slaney_fb(n_mels: int, n_fft: int, fmax: float = 8000.0) -> np.ndarray:
    """librosa.filters.mel(sr=16000, n_fft, n_mels, fmin=0, fmax) (Slaney scale and area normalisation)."""
    def hz2mel(f):
        f = np.asarray(f, np.float64)
        return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0),
                        f / (200.0 / 3))

    def mel2hz(m):
        m = np.asarray(m, np.float64)
        return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))

    mel_f = mel2hz(np.linspace(hz2mel(0.0), hz2mel(fmax), n_mels + 2))
    fft_f = np.linspace(0, SR / 2, 1 + n_fft // 2)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_f[None, :]
    w = np.maximum(0.0, np.minimum(-ramps[:-2] / fdiff[:-1, None], ramps[2:] / fdiff[1:, None]))
    w *= (2.0 / (mel_f[2:] - mel_f[:-2]))[:, None]
    return w.astype(np.float32)


_SPK_FB = torch.from_numpy(_slaney_fb(SPK_MELS, SPK_N_FFT))


def speaker_mel(wave: np.ndarray) -> np.ndarray:
    """(n, 40) float32 log power mel at 100 Hz (25 ms Hann window, 10 ms hop, centred), the GE2E input.

    Deviation: log(mel + 1e-6) instead of the raw power mel of the official encoder (better conditioned for
    a small LSTM trained for a few hundred steps)."""
    w = torch.from_numpy(_check_wave(wave, "speaker_mel"))
    spec = torch.stft(w, SPK_N_FFT, SPK_HOP, SPK_N_FFT, torch.hann_window(SPK_N_FFT), center=True,
                      return_complex=True).abs().pow(2)
    return torch.log(_SPK_FB @ spec + 1e-6).T.contiguous().numpy()


class SpeakerEncoder(nn.Module):
    """(B, 160, 40) log-mel partials -> (B, emb) L2-normalised speaker embeddings; `head` gives speaker logits."""

    def __init__(self, n_speakers: int = 0, hidden: int = 128, layers: int = 2, emb_dim: int = 64):
        super().__init__()
        self.lstm = nn.LSTM(SPK_MELS, hidden, num_layers=layers, batch_first=True)
        self.proj = nn.Linear(hidden, emb_dim)
        self.head = nn.Linear(emb_dim, max(1, n_speakers))
        self.scale = nn.Parameter(torch.tensor(10.0))

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> SpeakerEncoder:
        layers = sum(1 for k in sd if k.startswith("lstm.weight_ih_l"))
        model = cls(n_speakers=sd["head.weight"].shape[0], hidden=sd["proj.weight"].shape[1], layers=layers,
                    emb_dim=sd["proj.weight"].shape[0])
        model.load_state_dict(sd)
        return model

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(mel)
        return F.normalize(F.relu(self.proj(h[-1])), dim=-1, eps=1e-8)

    def logits(self, emb: torch.Tensor) -> torch.Tensor:
        # cosine-softmax head (normalised class weights x a learned scale): keeps training stable on
        # unit-norm embeddings.
        return self.scale * emb @ F.normalize(self.head.weight, dim=-1).T


SPEAKER_DEFAULTS: dict[str, Any] = {
    "steps": 300, "batch": 32, "lr": 1e-3, "hidden": 128, "layers": 2, "emb_dim": 64, "segment": PARTIAL,
    "every": 100,
}


def _crop(mel: np.ndarray, n: int, start: int) -> np.ndarray:
    if len(mel) < n:  # repeat a short utterance to fill the window
        mel = np.concatenate([mel] * (n // len(mel) + 1), axis=0)
    return mel[start:start + n]


def fit_speaker_encoder(waves: Sequence[np.ndarray], speaker_ids: Sequence[Any], cfg: dict | None, seed: int,
                        checkpointer: Checkpointer | None = None, progress: bool = False
                        ) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """Train the speaker encoder (softmax over the speakers) on random 1.6 s segments.

    waves: float 16 kHz 1-D arrays; speaker_ids: any hashable labels (one per wave). Returns (state_dict,
    history); rebuild with `SpeakerEncoder.from_state_dict`."""
    c = _config(cfg, SPEAKER_DEFAULTS, "fit_speaker_encoder")
    if len(waves) != len(speaker_ids) or not waves:
        raise ValueError(f"fit_speaker_encoder: need one speaker id per wave, got {len(waves)} waves and "
                         f"{len(speaker_ids)} ids")
    labels = sorted(set(speaker_ids), key=str)
    if len(labels) < 2:
        raise ValueError("fit_speaker_encoder: need at least 2 distinct speakers to train the softmax head")
    y_all = np.array([labels.index(s) for s in speaker_ids])
    mels = [speaker_mel(w) for w in waves]
    torch.manual_seed(seed)
    model = SpeakerEncoder(len(labels), c["hidden"], c["layers"], c["emb_dim"])
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"])
    gen = torch.Generator().manual_seed(seed)
    seg = c["segment"]

    def step(_: int) -> dict[str, float]:
        idx = torch.randint(len(mels), (c["batch"],), generator=gen).tolist()
        batch = []
        for i in idx:
            n = max(0, len(mels[i]) - seg)
            start = int(torch.randint(n + 1, (1,), generator=gen))
            batch.append(_crop(mels[i], seg, start))
        x = torch.from_numpy(np.stack(batch))
        y = torch.from_numpy(y_all[idx])
        logits = model.logits(model(x))
        loss = F.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 3.0)
        opt.step()
        return {"loss": loss.item(), "acc": (logits.argmax(-1) == y).float().mean().item()}

    model.train()
    hist = train_loop(model=model, optimizer=opt, step_fn=step, n_steps=c["steps"],
                      state=TrainState(generators={"batch": gen}), checkpointer=checkpointer, every=c["every"],
                      desc="speaker_encoder", progress=progress)
    return model.state_dict(), hist


@torch.no_grad()
def embed_speakers(model: SpeakerEncoder, waves: Sequence[np.ndarray]) -> np.ndarray:
    """(N, emb) float32: the mean of the embeddings of 160-frame partials (50% overlap), re-normalised."""
    model.eval()
    parts, owner = [], []
    for i, w in enumerate(waves):
        mel = speaker_mel(w)
        starts = list(range(0, max(1, len(mel) - PARTIAL + 1), PARTIAL // 2))
        for s in starts:
            parts.append(_crop(mel, PARTIAL, s))
            owner.append(i)
    if not parts:
        return np.zeros((0, model.proj.out_features), np.float32)
    emb = model(torch.from_numpy(np.stack(parts)))
    out = torch.zeros(len(waves), emb.shape[1]).index_add_(0, torch.tensor(owner), emb)
    return F.normalize(out, dim=-1, eps=1e-8).numpy().astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------
# unit-to-mel
def length_regulate(h: torch.Tensor, durations: torch.Tensor, lengths: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat each unit's hidden by its duration: h (B, N, D), durations (B, N) int >= 0 (entries past
    `lengths` ignored) -> (B, max L, D) zero-padded and the lengths L_b = sum(durations_b)."""
    if h.dim() != 3 or durations.shape != h.shape[:2]:
        raise ValueError(f"length_regulate: h must be (B, N, D) and durations (B, N); got {tuple(h.shape)} and "
                         f"{tuple(durations.shape)}")
    d = durations.long().clamp(min=0)
    if lengths is not None:
        mask = torch.arange(h.shape[1])[None, :] < lengths[:, None]
        d = d * mask
    out_len = d.sum(1)
    out = h.new_zeros(h.shape[0], int(out_len.max()) if h.shape[0] else 0, h.shape[2])
    for b in range(h.shape[0]):
        out[b, : int(out_len[b])] = torch.repeat_interleave(h[b], d[b], dim=0)
    return out, out_len


def durations_from_log(log_pred: torch.Tensor) -> torch.Tensor:
    """Official inference rule (fairseq CodeHiFiGAN): round(exp(pred) - 1) cast to long, then clamped to >= 1."""
    return torch.clamp(torch.round(torch.exp(log_pred) - 1).long(), min=1)


class _ConvLN(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, padding=k // 2)
        self.norm = nn.LayerNorm(cout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, C)
        return self.drop(self.norm(F.relu(self.conv(x.transpose(1, 2)).transpose(1, 2))))


class DurationPredictor(nn.Module):
    """fairseq VariancePredictor shape: 2 x (conv k3 -> ReLU -> LayerNorm -> dropout) -> Linear -> log(1+d)."""

    def __init__(self, dim: int, hidden: int = 128, kernel: int = 3, dropout: float = 0.5):
        super().__init__()
        self.layers = nn.Sequential(_ConvLN(dim, hidden, kernel, dropout), _ConvLN(hidden, hidden, kernel, dropout))
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.layers(x)).squeeze(-1)


class UnitToMel(nn.Module):
    """De-duplicated units (B, N) + speaker embedding (B, spk_dim) + language (B,) -> log-mel (B, L, 80)."""

    def __init__(self, n_units: int, n_langs: int = len(LANGS), unit_dim: int = 128, spk_dim: int = 64,
                 hidden: int = 192, dur_hidden: int = 128, dur_dropout: float = 0.5, n_layers: int = 3,
                 kernel: int = 5, dropout: float = 0.1):
        super().__init__()
        self.n_units, self.n_langs, self.spk_dim = n_units, n_langs, spk_dim
        self.unit_emb = nn.Embedding(n_units, unit_dim)
        self.lang_emb = nn.Embedding(n_langs, unit_dim)
        self.spk_proj = nn.Linear(spk_dim, hidden)
        self.dur = DurationPredictor(unit_dim, dur_hidden, 3, dur_dropout)
        self.inp = nn.Linear(unit_dim + 2, hidden)  # + position within the run and log duration
        self.convs = nn.ModuleList(_ConvLN(hidden, hidden, kernel, dropout) for _ in range(n_layers))
        self.out = nn.Linear(hidden, N_MELS)

    def config(self) -> dict[str, Any]:
        return {"n_units": self.n_units, "n_langs": self.n_langs, "spk_dim": self.spk_dim,
                "unit_dim": self.unit_emb.embedding_dim, "hidden": self.out.in_features,
                "dur_hidden": self.dur.out.in_features, "n_layers": len(self.convs),
                "kernel": self.convs[0].conv.kernel_size[0], "dur_dropout": self.dur.layers[0].drop.p,
                "dropout": self.convs[0].drop.p}

    def embed(self, units: torch.Tensor, langs: torch.Tensor) -> torch.Tensor:
        return self.unit_emb(units) + self.lang_emb(langs)[:, None, :]

    def decode(self, e: torch.Tensor, durations: torch.Tensor, lengths: torch.Tensor, spk: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Length-regulate the unit hiddens e (B, N, D) by the durations and decode (B, L, 80) mels."""
        d = durations.long().clamp(min=1) * (torch.arange(e.shape[1])[None] < lengths[:, None])
        # within-run position (0..1) and log duration of the run, so frames of one unit can differ
        logd = torch.log1p(d.float())[..., None]
        reg, out_len = length_regulate(torch.cat([e, logd], -1), d)
        p = torch.zeros(reg.shape[:2])
        for b in range(d.shape[0]):
            db = d[b]
            starts = torch.repeat_interleave(torch.cumsum(db, 0) - db, db)
            p[b, : len(starts)] = (torch.arange(len(starts)) - starts) / torch.repeat_interleave(db, db)
        x = self.inp(torch.cat([reg, p[..., None]], -1)) + self.spk_proj(spk)[:, None, :]
        for conv in self.convs:
            x = x + conv(x)
        mask = (torch.arange(x.shape[1])[None] < out_len[:, None]).float()[..., None]
        return self.out(x) * mask, out_len

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], **kwargs: Any) -> UnitToMel:
        model = cls(n_units=sd["unit_emb.weight"].shape[0], n_langs=sd["lang_emb.weight"].shape[0],
                    unit_dim=sd["unit_emb.weight"].shape[1], spk_dim=sd["spk_proj.weight"].shape[1],
                    hidden=sd["out.weight"].shape[1], dur_hidden=sd["dur.out.weight"].shape[1],
                    n_layers=sum(1 for k in sd if k.startswith("convs.") and k.endswith(".conv.weight")),
                    kernel=sd["convs.0.conv.weight"].shape[2], **kwargs)
        model.load_state_dict(sd)
        return model


UNIT2MEL_DEFAULTS: dict[str, Any] = {
    "steps": 2000, "batch": 32, "lr": 1e-3, "n_units": 100, "hidden": 192, "unit_dim": 128, "dur_hidden": 128,
    "dur_dropout": 0.5, "dropout": 0.1, "n_layers": 3, "kernel": 5, "dur_weight": 1.0, "every": 200,
}


def _pad(seqs: Sequence[np.ndarray], value: float = 0.0) -> torch.Tensor:
    n = max(len(s) for s in seqs)
    out = np.full((len(seqs), n, *np.asarray(seqs[0]).shape[1:]), value, dtype=np.asarray(seqs[0]).dtype)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return torch.from_numpy(out)


def fit_unit_to_mel(items: Sequence[dict[str, Any]], cfg: dict | None, seed: int,
                    checkpointer: Checkpointer | None = None, progress: bool = False
                    ) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """Train `UnitToMel` on items dict(units50 (2T,) int, mel (2T, 80) float log-mel, spk_emb (64,), lang).

    Targets: de-duplicated units and their run lengths (common.run_lengths) for the duration loss (MSE on
    log(1+d)); the mel is decoded with the TRUE durations (teacher forcing) and trained with L1.
    Returns (state_dict, history); rebuild with `UnitToMel.from_state_dict`."""
    c = _config(cfg, UNIT2MEL_DEFAULTS, "fit_unit_to_mel")
    if not items:
        raise ValueError("fit_unit_to_mel: no training items")
    data = []
    for i, it in enumerate(items):
        missing = {"units50", "mel", "spk_emb", "lang"} - set(it)
        if missing:
            raise ValueError(f"fit_unit_to_mel: item {i} lacks keys {sorted(missing)}")
        u = np.asarray(it["units50"]).astype(np.int64)
        mel = np.asarray(it["mel"], np.float32)
        if mel.ndim != 2 or mel.shape[1] != N_MELS or len(mel) != len(u):
            raise ValueError(f"fit_unit_to_mel: item {i}: mel must be (len(units50)={len(u)}, {N_MELS}), got "
                             f"{mel.shape}; compute it with features.log_mel on the same utterance")
        if u.min() < 0 or u.max() >= c["n_units"]:
            raise ValueError(f"fit_unit_to_mel: item {i}: unit ids must be in [0, n_units={c['n_units']})")
        vals, lens = run_lengths(u)
        data.append((np.array(vals), np.array(lens), mel, np.asarray(it["spk_emb"], np.float32),
                     lang_index(it["lang"])))
    spk_dim = len(data[0][3])
    torch.manual_seed(seed)
    model = UnitToMel(c["n_units"], len(LANGS), c["unit_dim"], spk_dim, c["hidden"], c["dur_hidden"],
                      c["dur_dropout"], c["n_layers"], c["kernel"], c["dropout"])
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"], betas=(0.8, 0.99))
    gen = torch.Generator().manual_seed(seed)

    def step(_: int) -> dict[str, float]:
        idx = torch.randint(len(data), (c["batch"],), generator=gen).tolist()
        b = [data[i] for i in idx]
        units, durs = _pad([x[0] for x in b]), _pad([x[1] for x in b])
        nlen = torch.tensor([len(x[0]) for x in b])
        mel_t = _pad([x[2] for x in b])
        spk, langs = torch.from_numpy(np.stack([x[3] for x in b])), torch.tensor([x[4] for x in b])
        e = model.embed(units, langs)
        umask = (torch.arange(units.shape[1])[None] < nlen[:, None]).float()
        dur_loss = (((model.dur(e) - torch.log1p(durs.float())) ** 2) * umask).sum() / umask.sum()
        mel_p, out_len = model.decode(e, durs, nlen, spk)
        fmask = (torch.arange(mel_p.shape[1])[None] < out_len[:, None]).float()[..., None]
        mel_loss = ((mel_p - mel_t).abs() * fmask).sum() / (fmask.sum() * N_MELS)
        loss = mel_loss + c["dur_weight"] * dur_loss
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        return {"loss": loss.item(), "mel_l1": mel_loss.item(), "dur_mse": dur_loss.item()}

    model.train()
    hist = train_loop(model=model, optimizer=opt, step_fn=step, n_steps=c["steps"],
                      state=TrainState(generators={"batch": gen}), checkpointer=checkpointer, every=c["every"],
                      desc="unit_to_mel", progress=progress)
    return model.state_dict(), hist


@torch.no_grad()
def synthesize_mel(model: UnitToMel, dedup_units_list: Sequence[Sequence[int]], spk_embs: np.ndarray,
                   langs: Sequence[str | int], return_durations: bool = False):
    """Batched inference: de-duplicated unit lists + (N, spk_dim) embeddings + languages -> list of (n_i, 80)
    float32 log-mels with n_i = sum of the predicted durations (and the durations if asked: the face renderer
    consumes the duration-expanded units, "Corrections from the authors' code")."""
    if not (len(dedup_units_list) == len(spk_embs) == len(langs)):
        raise ValueError("synthesize_mel: need as many speaker embeddings and languages as unit lists")
    if not len(dedup_units_list):
        return ([], []) if return_durations else []
    if any(len(u) == 0 for u in dedup_units_list):
        raise ValueError("synthesize_mel: an empty unit list cannot be synthesised")
    model.eval()
    units = _pad([np.asarray(u, np.int64) for u in dedup_units_list])
    if units.min() < 0 or units.max() >= model.n_units:
        raise ValueError(f"synthesize_mel: unit ids must be in [0, {model.n_units})")
    nlen = torch.tensor([len(u) for u in dedup_units_list])
    langs_t = torch.tensor([lang_index(x, model.n_langs) for x in langs])
    e = model.embed(units, langs_t)
    d = durations_from_log(model.dur(e))
    mel, out_len = model.decode(e, d, nlen, torch.as_tensor(np.asarray(spk_embs, np.float32)))
    mels = [mel[i, : int(out_len[i])].numpy().astype(np.float32) for i in range(len(nlen))]
    if return_durations:
        return mels, [d[i, : int(nlen[i])].numpy() for i in range(len(nlen))]
    return mels


# ---------------------------------------------------------------------------------------------------------------
# Griffin-Lim
_MEL_PINV: torch.Tensor | None = None


def _mel_pinv() -> torch.Tensor:
    global _MEL_PINV  # a cache of a constant matrix, not random state
    if _MEL_PINV is None:
        _MEL_PINV = torch.from_numpy(np.linalg.pinv(mel_filterbank(N_MELS).astype(np.float64)).astype(np.float32))
    return _MEL_PINV


def mel_to_linear(log_mel: torch.Tensor) -> torch.Tensor:
    """(B, n, 80) log-mel -> (B, 513, n) non-negative linear magnitude (pseudo-inverse, clipped at 0)."""
    return torch.clamp(torch.exp(log_mel) @ _mel_pinv().T, min=0.0).transpose(1, 2)


GL_CHUNK = 8          # utterances per Griffin-Lim batch: small enough for the cache (2.5-3x faster than one batch)
_GL_MARGIN = 4        # zero frames kept past a chunk's longest utterance: its STFT frames then see the same
#                       window envelope and no reflection padding, so a chunk reproduces the padded batch exactly


@torch.no_grad()
def griffin_lim(mels: Sequence[np.ndarray], n_iter: int = 32, seed: int = 0, momentum: float = 0.99
                ) -> list[np.ndarray]:
    """Log-mels (n_i, 80) (features.log_mel convention) -> float32 waveforms of n_i * 320 samples at 16 kHz.

    n_fft 1024, hop 320, Hann 1024, centred STFT; initial phase uniform from a generator seeded by `seed`, drawn
    for all utterances padded to the longest; fast Griffin-Lim (librosa's momentum 0.99). Runs on chunks of
    `GL_CHUNK` utterances of similar length, each padded only to its longest plus `_GL_MARGIN` frames: the
    output is bit-identical to one padded batch (a unit test checks it) at a third of the time."""
    if n_iter < 0:
        raise ValueError(f"griffin_lim: n_iter must be >= 0, got {n_iter}")
    if not len(mels):
        return []
    for i, m in enumerate(mels):
        m = np.asarray(m)
        if m.ndim != 2 or m.shape[1] != N_MELS or len(m) == 0:
            raise ValueError(f"griffin_lim: mel {i} must be (n >= 1, {N_MELS}), got {m.shape}")
    lens = [len(m) for m in mels]
    mag = mel_to_linear(_pad([np.asarray(m, np.float32) for m in mels], value=math.log(1e-5)))
    mag = torch.cat([mag, mag[..., -1:]], dim=-1)  # the centred STFT of n*320 samples has n+1 frames
    for i, n in enumerate(lens):
        mag[i, :, n + 1:] = 0.0
    window = torch.hann_window(GL_N_FFT)
    gen = torch.Generator().manual_seed(int(seed))
    angles0 = torch.polar(torch.ones_like(mag), 2 * math.pi * torch.rand(mag.shape, generator=gen))
    order = sorted(range(len(lens)), key=lambda i: (lens[i], i))
    out: list[np.ndarray] = [np.zeros(0, np.float32)] * len(lens)
    for c in range(0, len(order), GL_CHUNK):
        idx = order[c: c + GL_CHUNK]
        frames = min(mag.shape[-1], max(lens[i] for i in idx) + 1 + _GL_MARGIN)
        y = _griffin_lim_batch(mag[idx, :, :frames], angles0[idx, :, :frames], n_iter, momentum, window)
        for j, i in enumerate(idx):
            out[i] = y[j, : lens[i] * MEL_HOP].numpy().astype(np.float32)
    return out


def _griffin_lim_batch(mag: torch.Tensor, angles: torch.Tensor, n_iter: int, momentum: float,
                       window: torch.Tensor) -> torch.Tensor:
    length = mag.shape[-1] * MEL_HOP - MEL_HOP

    def istft(spec):
        return torch.istft(spec, GL_N_FFT, MEL_HOP, GL_N_FFT, window, center=True, length=length)

    def stft(y):
        return torch.stft(y, GL_N_FFT, MEL_HOP, GL_N_FFT, window, center=True, return_complex=True)

    rebuilt = torch.zeros_like(angles)
    for _ in range(n_iter):
        prev = rebuilt
        rebuilt = stft(istft(mag * angles))
        angles = rebuilt - (momentum / (1 + momentum)) * prev
        angles = angles / (angles.abs() + 1e-16)
    return istft(mag * angles)
