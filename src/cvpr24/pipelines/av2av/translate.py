"""UTUT substitute: a many-to-many unit-to-unit translation Transformer (mBART-style) with its vocabulary,
training (label-smoothed CE, optional mBART denoising) and batched beam search.

Follows spec sections 2.3 and 8.5 and the official inference code (choijeongsoo/av2av `unit2unit/`, read for
facts only):

* dictionary = fairseq specials (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3), the K units, one `[lang]` token per
  language and `<mask>` (the order fairseq's `MultilingualDenoisingTask` builds);
* source = `<s>` + de-duplicated units + `</s>` + `[src]` (as `unit2unit/inference.py` builds it);
* the decoder is primed with `[tgt]` and a hypothesis ends with `[tgt]` (the generator's eos is the target
  language token), every other language token and `<mask>` are suppressed while decoding, and language
  tokens are stripped from the output (`unit2unit/task.py build_generator`).

Deviations, on purpose: the model is tiny (3+3 layers, d 256 instead of mBART-large); `<s>`, `<pad>`, `<unk>`
and `</s>` are also suppressed while decoding (they never occur in a target, fairseq leaves their
probability to the model); the optional denoising pre-training runs in the same loop and learning-rate
schedule as the translation training (mBART pre-trains in a separate run), so one checkpointer resumes both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cvpr24.core.training import Checkpointer, TrainState, train_loop

from .common import LANGS, dedup

BOS, PAD, EOS, UNK = "<s>", "<pad>", "</s>", "<unk>"
MASK = "<mask>"

DEFAULTS: dict[str, Any] = {
    # architecture (spec 8.5)
    "enc_layers": 3,
    "dec_layers": 3,
    "d_model": 256,
    "heads": 4,
    "ffn": 512,
    "dropout": 0.1,
    "positions": "sinusoidal",  # or "learned" (mBART)
    "max_len": 256,  # longest token sequence (source incl. specials, or decoder input)
    # training
    "steps": 3000,
    "batch_size": 64,  # pairs per batch (fixed size, padded)
    "max_tokens": 0,  # if > 0: also cap batch_size * padded length at this many tokens
    "lr": 5e-4,
    "warmup": 500,  # inverse-sqrt warmup steps
    "label_smoothing": 0.1,
    "clip_norm": 0.0,  # 0 = no clipping (fairseq default)
    "denoise_steps": 0,  # > 0: mBART denoising pre-training steps before translation
    "mask_ratio": 0.35,
    "poisson_lambda": 3.5,
    "checkpoint_every": 200,
    "log_every": 20,
    # decoding
    "beam": 5,
    "max_len_a": 1.5,
    "max_len_b": 10,
    "len_penalty": 1.0,
}


def validate_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """The config with defaults filled in; unknown keys or bad values raise ValueError naming the key."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"translate config: unknown key(s) {unknown}; known keys: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **cfg}
    pos_int = ["enc_layers", "dec_layers", "d_model", "heads", "ffn", "max_len", "batch_size", "beam",
               "checkpoint_every", "log_every"]
    for key in pos_int:
        if not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] < 1:
            raise ValueError(f"translate config: {key} must be a positive integer, got {out[key]!r}")
    for key in ["steps", "warmup", "max_tokens", "denoise_steps"]:
        if not isinstance(out[key], int) or isinstance(out[key], bool) or out[key] < 0:
            raise ValueError(f"translate config: {key} must be a non-negative integer, got {out[key]!r}")
    if out["d_model"] % out["heads"]:
        raise ValueError(f"translate config: d_model ({out['d_model']}) must be divisible by heads ({out['heads']})")
    for key, lo, hi in [("dropout", 0.0, 1.0), ("label_smoothing", 0.0, 1.0), ("mask_ratio", 0.0, 1.0)]:
        if not isinstance(out[key], (int, float)) or not lo <= out[key] < hi:
            raise ValueError(f"translate config: {key} must be in [{lo}, {hi}), got {out[key]!r}")
    for key in ["lr", "poisson_lambda"]:
        if not isinstance(out[key], (int, float)) or out[key] <= 0:
            raise ValueError(f"translate config: {key} must be > 0, got {out[key]!r}")
    for key in ["clip_norm", "max_len_a", "max_len_b", "len_penalty"]:
        if not isinstance(out[key], (int, float)) or out[key] < 0:
            raise ValueError(f"translate config: {key} must be >= 0, got {out[key]!r}")
    if out["positions"] not in ("sinusoidal", "learned"):
        raise ValueError(f"translate config: positions must be 'sinusoidal' or 'learned', got {out['positions']!r}")
    return out


class UnitVocab:
    """Token ids: `<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, units 0..K-1 -> 4..K+3, then `[lang]`, then `<mask>`."""

    def __init__(self, K: int, langs: Sequence[str] = LANGS):
        if not isinstance(K, int) or K < 1:
            raise ValueError(f"UnitVocab: K must be a positive integer, got {K!r}")
        langs = tuple(langs)
        if not langs or len(set(langs)) != len(langs):
            raise ValueError(f"UnitVocab: langs must be a non-empty list without repeats, got {langs!r}")
        self.K = K
        self.langs = langs
        self.bos, self.pad, self.eos, self.unk = 0, 1, 2, 3
        self.n_special = 4
        self._lang_ids = {lang: self.n_special + K + i for i, lang in enumerate(langs)}
        self.mask = self.n_special + K + len(langs)
        self.size = self.mask + 1

    def __len__(self) -> int:
        return self.size

    def unit(self, u: int) -> int:
        """Id of unit u (0 <= u < K)."""
        u = int(u)
        if not 0 <= u < self.K:
            raise ValueError(f"unit {u} is outside the vocabulary of K={self.K} units (0..{self.K - 1})")
        return self.n_special + u

    def lang(self, lang: str) -> int:
        """Id of the language token `[lang]`."""
        if lang not in self._lang_ids:
            raise ValueError(f"unknown language {lang!r}; known languages: {list(self.langs)}")
        return self._lang_ids[lang]

    @property
    def lang_ids(self) -> list[int]:
        return list(self._lang_ids.values())

    def is_unit(self, i: int) -> bool:
        return self.n_special <= int(i) < self.n_special + self.K

    def encode_units(self, units: Sequence[int]) -> list[int]:
        """De-duplicated unit ids (no specials)."""
        return [self.unit(u) for u in dedup(units)]

    def encode_source(self, units: Sequence[int], src_lang: str) -> list[int]:
        """`<s> dedup(units) </s> [src]` (the official unit2unit source format)."""
        return [self.bos, *self.encode_units(units), self.eos, self.lang(src_lang)]

    def decode(self, ids: Sequence[int] | torch.Tensor) -> list[int]:
        """Units of a token sequence, language tokens and specials stripped."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return [int(i) - self.n_special for i in ids if self.is_unit(i)]


def _sinusoids(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2] = torch.sin(pos * inv)
    pe[:, 1::2] = torch.cos(pos * inv[: d // 2])
    return pe


class _DecoderLayer(nn.Module):
    """Pre-norm decoder layer (self-attention, cross-attention, FFN) with an incremental key/value cache,
    so beam search costs one token per step instead of re-running the whole prefix."""

    def __init__(self, d: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        self.h, self.dh, self.p = heads, d // heads, dropout
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.q2, self.kv2, self.o2 = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)
        self.ff1, self.ff2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.n1, self.n2, self.n3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)

    def memory_kv(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, S, _ = memory.shape
        k, v = self.kv2(memory).view(B, S, 2, self.h, self.dh).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x, mem_kv, mem_attend, cache: dict[str, torch.Tensor] | None = None):
        B, T, d = x.shape
        p = self.p if self.training else 0.0
        q, k, v = self.qkv(self.n1(x)).view(B, T, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        Tk = k.shape[2]
        # query i (absolute position Tk - T + i) sees keys 0..Tk - T + i; right padding needs no key mask
        causal = torch.ones(T, Tk, dtype=torch.bool, device=x.device).tril(Tk - T)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=causal, dropout_p=p)
        x = x + self.drop(self.o(y.transpose(1, 2).reshape(B, T, d)))
        q = self.q2(self.n2(x)).view(B, T, self.h, self.dh).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, mem_kv[0], mem_kv[1], attn_mask=mem_attend, dropout_p=p)
        x = x + self.drop(self.o2(y.transpose(1, 2).reshape(B, T, d)))
        return x + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.n3(x))))))


class TinyUTUT(nn.Module):
    """Pre-norm Transformer encoder-decoder with shared embeddings and a tied output projection (+ bias)."""

    def __init__(self, vocab_size: int, cfg: dict[str, Any] | None = None):
        super().__init__()
        cfg = validate_config(cfg)
        self.cfg = cfg
        d = cfg["d_model"]
        self.vocab_size = int(vocab_size)
        self.max_len = cfg["max_len"]
        self.pad = 1
        self.embed = nn.Embedding(vocab_size, d, padding_idx=self.pad)
        nn.init.normal_(self.embed.weight, 0.0, d**-0.5)
        with torch.no_grad():
            self.embed.weight[self.pad].zero_()
        self.scale = math.sqrt(d)
        if cfg["positions"] == "learned":
            self.pos = nn.Embedding(self.max_len, d)
            nn.init.normal_(self.pos.weight, 0.0, d**-0.5)
        else:
            self.register_buffer("pos_table", _sinusoids(self.max_len, d), persistent=False)
            self.pos = None
        self.emb_norm = nn.LayerNorm(d)  # mBART's layernorm_embedding
        self.drop = nn.Dropout(cfg["dropout"])

        def enc_layer() -> nn.Module:
            return nn.TransformerEncoderLayer(d, cfg["heads"], cfg["ffn"], cfg["dropout"], activation="gelu",
                                              batch_first=True, norm_first=True)

        self.encoder = nn.TransformerEncoder(enc_layer(), cfg["enc_layers"], norm=nn.LayerNorm(d),
                                             enable_nested_tensor=False)
        self.decoder = nn.ModuleList(
            _DecoderLayer(d, cfg["heads"], cfg["ffn"], cfg["dropout"]) for _ in range(cfg["dec_layers"])
        )
        self.dec_norm = nn.LayerNorm(d)
        self.out_bias = nn.Parameter(torch.zeros(vocab_size))

    def _embed(self, tokens: torch.Tensor, offset: int = 0) -> torch.Tensor:
        L = offset + tokens.shape[1]
        if L > self.max_len:
            raise ValueError(f"sequence of {L} tokens exceeds max_len={self.max_len}; raise cfg['max_len']")
        x = self.embed(tokens) * self.scale
        table = self.pos.weight if self.pos is not None else self.pos_table
        return self.drop(self.emb_norm(x + table[offset:L][None]))

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """src (B, S) long -> memory (B, S, d) float, padding mask (B, S) bool (True = pad)."""
        mask = src.eq(self.pad)
        return self.encoder(self._embed(src), src_key_padding_mask=mask), mask

    def memory_state(self, memory: torch.Tensor, mem_mask: torch.Tensor) -> dict[str, Any]:
        """Per-layer cross-attention keys/values of the memory, computed once (reorder rows with
        `select_rows`)."""
        return {"mem_kv": [layer.memory_kv(memory) for layer in self.decoder],
                "mem_attend": ~mem_mask[:, None, None, :], "cache": [{} for _ in self.decoder], "offset": 0}

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor | None = None,
               mem_mask: torch.Tensor | None = None, state: dict[str, Any] | None = None) -> torch.Tensor:
        """Decoder input (B, T) long -> logits (B, T, V) float (causal). With `state` (from `memory_state`)
        `tgt_in` holds only the new tokens and the state's key/value cache grows by them."""
        if state is None:
            state = self.memory_state(memory, mem_mask)
            state["cache"] = [None] * len(self.decoder)
        h = self._embed(tgt_in, state["offset"])
        for layer, kv, cache in zip(self.decoder, state["mem_kv"], state["cache"], strict=True):
            h = layer(h, kv, state["mem_attend"], cache)
        if state["cache"][0] is not None:
            state["offset"] += tgt_in.shape[1]
        return self.dec_norm(h) @ self.embed.weight.t() + self.out_bias

    @staticmethod
    def select_rows(state: dict[str, Any], rows: torch.Tensor) -> dict[str, Any]:
        """The decoding state restricted to / reordered by `rows` (beam search bookkeeping)."""
        return {"mem_kv": [(k[rows], v[rows]) for k, v in state["mem_kv"]],
                "mem_attend": state["mem_attend"][rows],
                "cache": [{n: t[rows] for n, t in c.items()} for c in state["cache"]], "offset": state["offset"]}

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        memory, mem_mask = self.encode(src)
        return self.decode(tgt_in, memory, mem_mask)


def build_model(vocab: UnitVocab, cfg: dict[str, Any] | None = None) -> TinyUTUT:
    """A TinyUTUT for this vocabulary (use `model.load_state_dict(state_dict)` to restore trained weights)."""
    return TinyUTUT(len(vocab), cfg)


# ---------------------------------------------------------------------------------------------------- data
def _pad(seqs: Sequence[Sequence[int]], pad: int) -> torch.Tensor:
    L = max(len(s) for s in seqs)
    out = torch.full((len(seqs), L), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out


def _target(vocab: UnitVocab, units: Sequence[int], lang: str) -> tuple[list[int], list[int]]:
    """Decoder input `[tgt] units` and output `units [tgt]` (the target language token is the eos)."""
    ids = vocab.encode_units(units)
    t = vocab.lang(lang)
    return [t, *ids], [*ids, t]


def _prepare(vocab: UnitVocab, pairs: Sequence[Sequence[Any]], max_len: int, what: str):
    out = []
    for n, pair in enumerate(pairs):
        if len(pair) != 4:
            raise ValueError(f"{what}[{n}] must be (src_units, src_lang, tgt_units, tgt_lang), got {len(pair)} items")
        su, sl, tu, tl = pair
        src = vocab.encode_source(su, sl)
        tin, tout = _target(vocab, tu, tl)
        if len(su) == 0 or len(tu) == 0:
            raise ValueError(f"{what}[{n}] has an empty unit sequence; drop empty utterances first")
        if len(src) > max_len or len(tin) > max_len:
            raise ValueError(f"{what}[{n}] is {max(len(src), len(tin))} tokens long > max_len={max_len}; "
                             "raise cfg['max_len']")
        out.append((src, tin, tout))
    return out


def _span_mask(vocab: UnitVocab, ids: list[int], ratio: float, lam: float, g: torch.Generator) -> list[int]:
    """mBART text infilling: mask ~ratio of the tokens in spans of Poisson(lam) length (>= 1), each span
    replaced by a single `<mask>`."""
    n = len(ids)
    n_mask = int(round(ratio * n))
    masked = torch.zeros(n, dtype=torch.bool)
    while int(masked.sum()) < n_mask:
        length = max(1, int(torch.poisson(torch.tensor([lam]), generator=g).item()))
        start = int(torch.randint(0, n, (1,), generator=g).item())
        masked[start : start + min(length, n_mask - int(masked.sum()))] = True
    out: list[int] = []
    for i, tok in enumerate(ids):
        if not masked[i]:
            out.append(tok)
        elif not out or out[-1] != vocab.mask or (i > 0 and not masked[i - 1]):
            out.append(vocab.mask)
    return out


def _lr_lambda(warmup: int):
    def f(step: int) -> float:
        s = step + 1
        if warmup <= 0:
            return 1.0
        return s / warmup if s < warmup else math.sqrt(warmup / s)

    return f


def _loss(model: TinyUTUT, src, tin, tout, smoothing: float, pad: int) -> tuple[torch.Tensor, float]:
    logits = model(src, tin)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tout.reshape(-1), ignore_index=pad,
                           label_smoothing=smoothing)
    keep = tout.ne(pad)
    acc = float((logits.argmax(-1).eq(tout) & keep).sum()) / max(1, int(keep.sum()))
    return loss, acc


def fit_translation(
    pairs: Sequence[tuple[Sequence[int], str, Sequence[int], str]],
    cfg: dict[str, Any] | None,
    seed: int,
    checkpointer: Checkpointer | None = None,
    progress: bool = False,
    valid_pairs: Sequence[tuple[Sequence[int], str, Sequence[int], str]] | None = None,
    K: int | None = None,
    langs: Sequence[str] = LANGS,
) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """Train a TinyUTUT on (src_units, src_lang, tgt_units, tgt_lang) pairs (units are de-duplicated here).

    `cfg["denoise_steps"]` > 0 first runs that many mBART denoising steps on the pairs' source and target
    sides (each as its own language), then `cfg["steps"]` translation steps. K defaults to 1 + the largest
    unit seen. Returns (model state_dict, history); the history ends with a `valid_loss`/`valid_acc` record
    when `valid_pairs` is given. Global torch RNG state (dropout) is seeded and restored afterwards.
    """
    cfg = validate_config(cfg)
    if not pairs:
        raise ValueError("fit_translation: no training pairs")
    if K is None:
        K = 1 + max(max(int(u) for u in p[k]) for p in pairs for k in (0, 2) if len(p[k]))
    vocab = UnitVocab(K, langs)
    data = _prepare(vocab, pairs, cfg["max_len"], "pairs")
    valid = _prepare(vocab, valid_pairs, cfg["max_len"], "valid_pairs") if valid_pairs else []
    # monolingual sequences for denoising: `units [lang]` of both sides
    mono = []
    for su, sl, tu, tl in pairs:
        for u, lang in ((su, sl), (tu, tl)):
            mono.append((vocab.encode_units(u), lang))
    n_denoise, n_total = cfg["denoise_steps"], cfg["denoise_steps"] + cfg["steps"]
    smoothing, pad = cfg["label_smoothing"], vocab.pad

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(vocab, cfg)
        gen = torch.Generator().manual_seed(seed + 1)
        opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], betas=(0.9, 0.98), eps=1e-6)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg["warmup"]))

        def draw(n: int) -> list[int]:
            idx = torch.randperm(n, generator=gen)[: cfg["batch_size"]].tolist()
            return idx

        def cap(seqs_len: list[int]) -> int:
            """How many of the drawn items fit under max_tokens (at least one)."""
            if cfg["max_tokens"] <= 0:
                return len(seqs_len)
            longest = 0
            for k, L in enumerate(seqs_len):
                longest = max(longest, L)
                if (k + 1) * longest > cfg["max_tokens"]:
                    return max(1, k)
            return len(seqs_len)

        def step_fn(step: int) -> dict[str, float]:
            model.train()
            if step < n_denoise:
                idx = draw(len(mono))
                items = []
                for i in idx:
                    ids, lang = mono[i]
                    noisy = _span_mask(vocab, ids, cfg["mask_ratio"], cfg["poisson_lambda"], gen)
                    t = vocab.lang(lang)
                    items.append(([vocab.bos, *noisy, vocab.eos, t], [t, *ids], [*ids, t]))
            else:
                items = [data[i] for i in draw(len(data))]
            items = items[: cap([max(len(a), len(b)) for a, b, _ in items])]
            src = _pad([a for a, _, _ in items], pad)
            tin = _pad([b for _, b, _ in items], pad)
            tout = _pad([c for _, _, c in items], pad)
            loss, acc = _loss(model, src, tin, tout, smoothing, pad)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg["clip_norm"] > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg["clip_norm"])
            opt.step()
            return {"loss": float(loss.detach()), "acc": acc, "lr": opt.param_groups[0]["lr"],
                    "denoise": float(step < n_denoise)}

        history = train_loop(model=model, optimizer=opt, step_fn=step_fn, n_steps=n_total, scheduler=sched,
                             state=TrainState(generators={"batches": gen}), checkpointer=checkpointer,
                             every=cfg["checkpoint_every"], log_every=cfg["log_every"], desc="utut",
                             progress=progress)
        if valid:
            history = [*history, {"step": n_total, **evaluate_loss(model, vocab, valid_pairs, cfg)}]
    model.eval()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, history


@torch.no_grad()
def evaluate_loss(model: TinyUTUT, vocab: UnitVocab, pairs, cfg: dict[str, Any] | None = None,
                  batch_size: int = 64) -> dict[str, float]:
    """Teacher-forced label-smoothed loss and token accuracy on pairs (eval mode)."""
    cfg = validate_config(cfg)
    data = _prepare(vocab, pairs, model.max_len, "pairs")
    was = model.training
    model.eval()
    tot_loss = tot_acc = 0.0
    n = 0
    for i in range(0, len(data), batch_size):
        chunk = data[i : i + batch_size]
        src, tin, tout = (_pad([c[k] for c in chunk], vocab.pad) for k in range(3))
        loss, acc = _loss(model, src, tin, tout, cfg["label_smoothing"], vocab.pad)
        tot_loss += float(loss) * len(chunk)
        tot_acc += acc * len(chunk)
        n += len(chunk)
    model.train(was)
    return {"valid_loss": tot_loss / n, "valid_acc": tot_acc / n}


# ---------------------------------------------------------------------------------------------------- decoding
def _per_item(value: str | Sequence[str], n: int, name: str) -> list[str]:
    if isinstance(value, str):
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"translate: {name} has {len(value)} entries for {n} source sequences")
    return value


@torch.no_grad()
def translate(
    model: TinyUTUT,
    vocab: UnitVocab,
    src_units_list: Sequence[Sequence[int]],
    src_lang: str | Sequence[str],
    tgt_lang: str | Sequence[str],
    beam: int = 5,
    max_len_a: float = 1.5,
    max_len_b: int = 10,
    len_penalty: float = 1.0,
    batch_size: int = 32,
    return_scores: bool = False,
    strip: bool = True,
) -> list[list[int]] | tuple[list[list[int]], list[float]]:
    """Batched beam search (beam=1: greedy). Returns the target units of each source (language tokens and
    specials stripped; `strip=False`: the raw generated token ids, eos included); with `return_scores` also each hypothesis' summed log-probability (eos included).

    As fairseq's SequenceGenerator: the decoder starts with `[tgt]`, a hypothesis ends when it emits `[tgt]`
    (forced at max_len = a * source units + b), every other language token, `<mask>`, `<s>`, `<pad>`,
    `<unk>` and `</s>` get -inf, finished hypotheses are ranked by score / length**len_penalty and a
    sentence stops when `beam` hypotheses have finished.
    """
    if beam < 1:
        raise ValueError(f"translate: beam must be >= 1, got {beam}")
    n = len(src_units_list)
    srcs = _per_item(src_lang, n, "src_lang")
    tgts = _per_item(tgt_lang, n, "tgt_lang")
    was = model.training
    model.eval()
    outs: list[list[int]] = []
    scores: list[float] = []
    for i in range(0, n, batch_size):
        o, s = _beam_batch(model, vocab, src_units_list[i : i + batch_size], srcs[i : i + batch_size],
                           tgts[i : i + batch_size], beam, max_len_a, max_len_b, len_penalty, strip)
        outs += o
        scores += s
    model.train(was)
    return (outs, scores) if return_scores else outs


def _beam_batch(model, vocab, units_list, srcs, tgts, beam, a, b, lenpen, strip):
    B = len(units_list)
    src_ids = [vocab.encode_source(u, s) for u, s in zip(units_list, srcs, strict=True)]
    tgt_tok = torch.tensor([vocab.lang(t) for t in tgts], dtype=torch.long)
    n_units = [len(s) - 3 for s in src_ids]
    # decoder steps allowed: units + eos (at least one unit); the decoder input (with its [tgt] prefix) must fit max_len
    max_steps = [max(1, min(int(a * u + b), model.max_len - 1)) + 1 for u in n_units]
    src = _pad(src_ids, vocab.pad)
    memory, mem_mask = model.encode(src)
    V = model.vocab_size
    banned = torch.zeros(B, V, dtype=torch.bool)
    banned[:, [vocab.bos, vocab.pad, vocab.eos, vocab.unk, vocab.mask]] = True
    banned[:, vocab.lang_ids] = True
    banned[torch.arange(B), tgt_tok] = False

    # active sentences: rows are sentence-major (sentence k's beams at k*beam .. k*beam+beam-1)
    active = list(range(B))
    state = model.memory_state(memory.repeat_interleave(beam, 0), mem_mask.repeat_interleave(beam, 0))
    tokens = tgt_tok.repeat_interleave(beam, 0)[:, None]
    cum = torch.full((B, beam), float("-inf"))
    cum[:, 0] = 0.0
    finished: list[list[tuple[float, float, list[int]]]] = [[] for _ in range(B)]
    step = 0
    while active:
        nb = len(active)
        logits = model.decode(tokens[:, -1:], state=state)[:, -1]
        lp = torch.log_softmax(logits.float(), -1).view(nb, beam, V)
        act = torch.tensor(active)
        lp = lp.masked_fill(banned[act][:, None, :], float("-inf"))
        eos_ids = tgt_tok[act]
        if step == 0:  # fairseq min_len=1: no empty hypothesis
            lp.scatter_(2, eos_ids[:, None, None].expand(nb, beam, 1), float("-inf"))
        force = torch.tensor([step + 1 >= max_steps[k] for k in active])
        if bool(force.any()):  # only eos allowed
            keep_eos = lp.gather(2, eos_ids[:, None, None].expand(nb, beam, 1))
            lp[force] = float("-inf")
            lp[force] = lp[force].scatter(2, eos_ids[force][:, None, None].expand(-1, beam, 1), keep_eos[force])
        cand = (cum[act][:, :, None] + lp).view(nb, beam * V)
        k2 = min(2 * beam, beam * V)
        top, idx = cand.topk(k2, dim=1)
        beam_of, tok_of = idx // V, idx % V
        new_rows, new_tok, new_cum, still = [], [], [], []
        for j, sent in enumerate(active):
            chosen = 0
            rows, toks, cs = [], [], []
            for c in range(k2):
                sc = float(top[j, c])
                if sc == float("-inf"):
                    break
                bi, tk = int(beam_of[j, c]), int(tok_of[j, c])
                if tk == int(eos_ids[j]):
                    # as fairseq: an eos among the top `beam` candidates finalises a hypothesis
                    if c < beam and len(finished[sent]) < beam:
                        hyp = tokens[j * beam + bi, 1:].tolist() + [tk]
                        finished[sent].append((sc / (len(hyp) ** lenpen), sc, hyp))
                elif chosen < beam:
                    rows.append(j * beam + bi)
                    toks.append(tk)
                    cs.append(sc)
                    chosen += 1
            done = len(finished[sent]) >= beam or chosen == 0
            if not done:
                while len(rows) < beam:  # fewer live candidates than beams: pad with dead rows
                    rows.append(rows[0])
                    toks.append(toks[0])
                    cs.append(float("-inf"))
                still.append((j, sent))
                new_rows += rows
                new_tok += toks
                new_cum.append(cs)
        if not still:
            break
        rows_t = torch.tensor(new_rows)
        tokens = torch.cat([tokens[rows_t], torch.tensor(new_tok)[:, None]], 1)
        state = model.select_rows(state, rows_t)
        cum_full = cum.clone()
        for (_, sent), cs in zip(still, new_cum, strict=True):
            cum_full[sent] = torch.tensor(cs)
        cum = cum_full
        active = [sent for _, sent in still]
        step += 1
    outs, scs = [], []
    for sent in range(B):
        if not finished[sent]:
            outs.append([])
            scs.append(float("-inf"))
            continue
        best = max(finished[sent], key=lambda h: h[0])
        outs.append(vocab.decode(best[2]) if strip else best[2])
        scs.append(best[1])
    return outs, scs


@torch.no_grad()
def sequence_logprob(model: TinyUTUT, vocab: UnitVocab, src_units: Sequence[int], src_lang: str,
                     tgt_units: Sequence[int], tgt_lang: str) -> float:
    """Summed log-probability of exactly `tgt_units [tgt]` (not de-duplicated) given the source (teacher
    forcing, eval mode, no suppression): the score beam search reports with len_penalty=0."""
    was = model.training
    model.eval()
    src = torch.tensor([vocab.encode_source(src_units, src_lang)])
    t = vocab.lang(tgt_lang)
    ids = [vocab.unit(u) for u in tgt_units]
    tin, tout = [t, *ids], [*ids, t]
    lp = torch.log_softmax(model(src, torch.tensor([tin])).float(), -1)[0]
    model.train(was)
    return float(lp.gather(1, torch.tensor(tout)[:, None]).sum())
