"""The offline evaluator for ASR-BLEU (spec 8.7): a tiny multilingual CTC character recogniser, WER/CER and BLEU.

Substitute for the per-language ASR models the paper uses to transcribe generated speech (spec 4 / 10).
`CTCRecognizer`: 80 log-mel at 50 Hz (features.log_mel) + a learned language embedding added to the input ->
per-utterance mean normalisation -> 2 convs (the first with stride 2: 25 Hz output, 40 ms per frame) ->
2-layer BiGRU -> characters + blank (index 0). One stride-2 only: espeak speaks ~12-16 characters per second and
CTC needs at least one frame per character (two for a doubled letter), so 12.5 Hz (stride 4) would be too
coarse; 25 Hz leaves ~1.5-2 frames per character. Deviation from spec 8.7: one multilingual model with a
language embedding instead of one per language (allowed by the spec). Greedy decoding (collapse repeats, drop
blanks). BLEU = sacrebleu.corpus_bleu(hyps, [refs]); the caller normalises (lower-case, no punctuation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cvpr24.core.training import Checkpointer, TrainState, train_loop
from cvpr24.pipelines.av2av.common import LANGS, N_MELS
from cvpr24.pipelines.av2av.corpus import _edit as edit_distance  # the cascade parser's Levenshtein, one copy
from cvpr24.pipelines.av2av.speech import _config, _pad, lang_index

BLANK = 0


class CTCRecognizer(nn.Module):
    """(B, L, 80) log-mel + lengths (B,) + language ids (B,) -> (B, ceil(L/2), n_chars + 1) log-probs, out lengths."""

    def __init__(self, n_chars: int, n_langs: int = len(LANGS), channels: int = 192, hidden: int = 192,
                 layers: int = 2, dropout: float = 0.1, stride: int = 2):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"CTCRecognizer: stride must be 1 (50 Hz frames) or 2 (25 Hz), got {stride}")
        self.n_chars, self.n_langs, self.stride = n_chars, n_langs, stride
        self.register_buffer("stride_t", torch.tensor(stride))   # saved, so from_state_dict rebuilds the rate
        self.lang_emb = nn.Embedding(n_langs, N_MELS)
        nn.init.zeros_(self.lang_emb.weight)
        self.conv1 = nn.Conv1d(N_MELS, channels, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv1d(channels, channels, 3, padding=1)
        self.gru = nn.GRU(channels, hidden, num_layers=layers, batch_first=True, bidirectional=True,
                          dropout=dropout if layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden, n_chars + 1)

    def out_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return (lengths + self.stride - 1) // self.stride

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor, langs: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        mask = (torch.arange(mel.shape[1])[None] < lengths[:, None]).float()[..., None]
        mean = (mel * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)
        x = (mel - mean) * mask / 4.0 + self.lang_emb(langs)[:, None, :]
        x = F.gelu(self.conv1(x.transpose(1, 2)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        out_len = self.out_lengths(lengths)
        packed = nn.utils.rnn.pack_padded_sequence(x, out_len.cpu(), batch_first=True, enforce_sorted=False)
        y, _ = self.gru(packed)
        y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
        return F.log_softmax(self.out(self.drop(y)), dim=-1), out_len

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> CTCRecognizer:
        model = cls(n_chars=sd["out.weight"].shape[0] - 1, n_langs=sd["lang_emb.weight"].shape[0],
                    channels=sd["conv1.weight"].shape[0], hidden=sd["gru.weight_hh_l0"].shape[1],
                    layers=sum(1 for k in sd if k.startswith("gru.weight_ih_l") and not k.endswith("reverse")),
                    stride=int(sd["stride_t"]) if "stride_t" in sd else 2)
        model.load_state_dict(sd)
        return model


ASR_DEFAULTS: dict[str, Any] = {
    "steps": 3000, "batch": 32, "lr": 2e-3, "channels": 192, "hidden": 192, "layers": 2, "dropout": 0.1,
    "every": 200, "stride": 2,
}
AUGMENT_DEFAULTS: dict[str, Any] = {"time_masks": 2, "time_width": 10, "freq_masks": 2, "freq_width": 10}


def encode_text(text: str, charset: str) -> list[int]:
    """Characters -> ids 1..len(charset) (0 is the CTC blank); an unknown character is a ValueError."""
    ids = []
    for ch in text:
        k = charset.find(ch)
        if k < 0:
            raise ValueError(f"character {ch!r} of {text!r} is not in the charset {charset!r}; normalise the "
                             f"text (lower-case, no punctuation) or extend the charset")
        ids.append(k + 1)
    return ids


def _check_charset(charset: str) -> None:
    if not isinstance(charset, str) or not charset or len(set(charset)) != len(charset):
        raise ValueError(f"charset must be a non-empty string of distinct characters, got {charset!r}")


def _check_mels(mels: Sequence[np.ndarray], what: str) -> list[np.ndarray]:
    out = []
    for i, m in enumerate(mels):
        m = np.asarray(m, np.float32)
        if m.ndim != 2 or m.shape[1] != N_MELS or len(m) == 0:
            raise ValueError(f"{what}: mel {i} must be (n >= 1, {N_MELS}) (features.log_mel), got {m.shape}")
        out.append(m)
    return out


def spec_augment(x: torch.Tensor, lengths: torch.Tensor, aug: dict[str, Any], gen: torch.Generator
                 ) -> torch.Tensor:
    """SpecAugment-style masking of padded (B, L, 80) log-mels: random time and frequency bands are set to the
    utterance's mean (i.e. zero after the model's mean normalisation); draws from `gen`."""
    x = x.clone()
    for b in range(x.shape[0]):
        n = int(lengths[b])
        fill = x[b, :n].mean(0)
        for _ in range(aug["time_masks"]):
            w = int(torch.randint(aug["time_width"] + 1, (1,), generator=gen))
            s = int(torch.randint(max(1, n - w + 1), (1,), generator=gen))
            x[b, s:s + w] = fill
        for _ in range(aug["freq_masks"]):
            w = int(torch.randint(aug["freq_width"] + 1, (1,), generator=gen))
            s = int(torch.randint(max(1, N_MELS - w + 1), (1,), generator=gen))
            x[b, :n, s:s + w] = fill[s:s + w]
    return x


def fit_asr(mels: Sequence[np.ndarray], texts: Sequence[str], langs: Sequence[str | int], charset: str,
            cfg: dict | None, seed: int, checkpointer: Checkpointer | None = None, progress: bool = False,
            augment: dict[str, Any] | None = None) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """Train the CTC recogniser on (n_i, 80) log-mels with their normalised texts. Returns (state_dict, history);
    rebuild with `CTCRecognizer.from_state_dict`. `augment`: None (off) or dict with keys of AUGMENT_DEFAULTS."""
    c = _config(cfg, ASR_DEFAULTS, "fit_asr")
    aug = None if augment is None else _config(augment, AUGMENT_DEFAULTS, "fit_asr augment")
    _check_charset(charset)
    mels = _check_mels(mels, "fit_asr")
    if not (len(mels) == len(texts) == len(langs)) or not mels:
        raise ValueError(f"fit_asr: need equally many mels, texts and langs (got {len(mels)}, {len(texts)}, "
                         f"{len(langs)})")
    targets = [encode_text(t, charset) for t in texts]
    for i, (m, t) in enumerate(zip(mels, targets, strict=True)):
        if not t:
            raise ValueError(f"fit_asr: text {i} is empty")
        if (len(m) + c["stride"] - 1) // c["stride"] < len(t):
            raise ValueError(f"fit_asr: utterance {i} has {len(m)} mel frames, too few for its {len(t)} "
                             f"characters at {50 // c['stride']} Hz CTC frames (set stride: 1)")
    lang_ids = [lang_index(x) for x in langs]
    torch.manual_seed(seed)
    model = CTCRecognizer(len(charset), len(LANGS), c["channels"], c["hidden"], c["layers"], c["dropout"],
                          c["stride"])
    opt = torch.optim.AdamW(model.parameters(), lr=c["lr"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=c["lr"], total_steps=c["steps"], pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    ctc = nn.CTCLoss(blank=BLANK, zero_infinity=True)

    def step(_: int) -> dict[str, float]:
        idx = torch.randint(len(mels), (c["batch"],), generator=gen).tolist()
        x = _pad([mels[i] for i in idx])
        lens = torch.tensor([len(mels[i]) for i in idx])
        if aug is not None:
            x = spec_augment(x, lens, aug, gen)
        logp, out_len = model(x, lens, torch.tensor([lang_ids[i] for i in idx]))
        tgt = torch.tensor([k for i in idx for k in targets[i]])
        tlen = torch.tensor([len(targets[i]) for i in idx])
        loss = ctc(logp.transpose(0, 1), tgt, out_len, tlen)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        return {"ctc": loss.item()}

    model.train()
    hist = train_loop(model=model, optimizer=opt, step_fn=step, n_steps=c["steps"], scheduler=sched,
                      state=TrainState(generators={"batch": gen}), checkpointer=checkpointer, every=c["every"],
                      desc="asr", progress=progress)
    return model.state_dict(), hist


def ctc_greedy_decode(ids: Sequence[int] | np.ndarray, charset: str) -> str:
    """Best-path ids (blank = 0) -> text: collapse repeats, then drop blanks."""
    out, prev = [], None
    for k in np.asarray(ids).tolist():
        if k != prev and k != BLANK:
            out.append(charset[k - 1])
        prev = k
    return "".join(out)


@torch.no_grad()
def transcribe(model: CTCRecognizer, mels: Sequence[np.ndarray], langs: Sequence[str | int], charset: str,
               batch: int = 64) -> list[str]:
    """Greedy CTC transcripts of (n_i, 80) log-mels."""
    _check_charset(charset)
    if len(charset) != model.n_chars:
        raise ValueError(f"transcribe: the model has {model.n_chars} characters but the charset {len(charset)}")
    mels = _check_mels(mels, "transcribe")
    if len(mels) != len(langs):
        raise ValueError("transcribe: need one language per mel")
    model.eval()
    hyps: list[str] = []
    for s in range(0, len(mels), batch):
        chunk = mels[s:s + batch]
        lens = torch.tensor([len(m) for m in chunk])
        lang_t = torch.tensor([lang_index(x, model.n_langs) for x in langs[s:s + batch]])
        logp, out_len = model(_pad(chunk), lens, lang_t)
        best = logp.argmax(-1)
        hyps += [ctc_greedy_decode(best[i, : int(out_len[i])], charset) for i in range(len(chunk))]
    return hyps


def snap_to_lexicon(text: str, lexicon: Sequence[str], cache: dict[str, str] | None = None) -> str:
    """Lexicon-constrained decoding of a greedy transcript: each word becomes the lexicon word at the smallest
    character edit distance (ties: the shorter length difference, then alphabetical order, so the result does
    not depend on the lexicon's order). What an ASR with a closed vocabulary outputs; `cache` memoises words."""
    if not lexicon:
        raise ValueError("snap_to_lexicon: the lexicon is empty")
    out = []
    for w in text.split():
        if cache is not None and w in cache:
            out.append(cache[w])
            continue
        best = min(lexicon, key=lambda x: (edit_distance(w, x), abs(len(x) - len(w)), x))
        if cache is not None:
            cache[w] = best
        out.append(best)
    return " ".join(out)


def _check_pairs(hyps: Sequence[str], refs: Sequence[str], what: str) -> None:
    if len(hyps) != len(refs) or not refs:
        raise ValueError(f"{what}: need equally many (>= 1) hypotheses and references, got {len(hyps)} and "
                         f"{len(refs)}")


def wer(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus word error rate (torchmetrics WordErrorRate: total edits / total reference words)."""
    from torchmetrics.text import WordErrorRate

    _check_pairs(hyps, refs, "wer")
    return float(WordErrorRate()(list(hyps), list(refs)))


def cer(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """Corpus character error rate (torchmetrics CharErrorRate)."""
    from torchmetrics.text import CharErrorRate

    _check_pairs(hyps, refs, "cer")
    return float(CharErrorRate()(list(hyps), list(refs)))


def bleu(hyps: Sequence[str], refs: Sequence[str]) -> float:
    """sacrebleu.corpus_bleu(hyps, [refs]).score (0-100); normalise (lower-case, strip punctuation) first."""
    try:
        import sacrebleu
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("bleu needs the sacrebleu package (pip install sacrebleu)") from exc
    _check_pairs(hyps, refs, "bleu")
    return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)]).score)
