"""Hand-written parallel text for the embedded "EspeakAV" data (spec section 8.1).

A synchronous mini-grammar SUBJ VERB OBJ [TIME] written for en, es, fr, it, pt: 8 subjects (person/number
agreement per language), 10 present-tense verbs, 15 objects (gender/article per language), 6 time adverbs. A
slot tuple generates one sentence per language, so test sentences are unseen combinations of seen words.
Also the text normalisation used by the ASR/BLEU evaluation, the ASR character set, and the dictionary
translation used by the cascade baseline (parse slots by edit distance, regenerate in the target language).

Deviation: combinations whose sentence would have fewer than 4 words in some language (French "j'ai le livre")
are left out so every sentence has a realistic length for sacrebleu.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from functools import cache, lru_cache

import numpy as np

from .common import LANGS

# person/number index used by the verb tables: 1sg, 2sg, 3sg, 1pl, 3pl
SUBJECTS: list[tuple[int, dict[str, str]]] = [
    (0, {"en": "I", "es": "yo", "fr": "je", "it": "io", "pt": "eu"}),
    (1, {"en": "you", "es": "tú", "fr": "tu", "it": "tu", "pt": "tu"}),
    (2, {"en": "the man", "es": "el hombre", "fr": "l'homme", "it": "l'uomo", "pt": "o homem"}),
    (2, {"en": "the woman", "es": "la mujer", "fr": "la femme", "it": "la donna", "pt": "a mulher"}),
    (3, {"en": "we", "es": "nosotros", "fr": "nous", "it": "noi", "pt": "nós"}),
    (4, {"en": "they", "es": "ellos", "fr": "ils", "it": "loro", "pt": "eles"}),
    (4, {"en": "the children", "es": "los niños", "fr": "les enfants", "it": "i bambini", "pt": "as crianças"}),
    (2, {"en": "my friend", "es": "mi amigo", "fr": "mon ami", "it": "il mio amico", "pt": "o meu amigo"}),
]

VERBS: list[dict[str, tuple[str, str, str, str, str]]] = [
    {"en": ("see", "see", "sees", "see", "see"), "es": ("veo", "ves", "ve", "vemos", "ven"),
     "fr": ("vois", "vois", "voit", "voyons", "voient"), "it": ("vedo", "vedi", "vede", "vediamo", "vedono"),
     "pt": ("vejo", "vês", "vê", "vemos", "veem")},
    {"en": ("want", "want", "wants", "want", "want"),
     "es": ("quiero", "quieres", "quiere", "queremos", "quieren"),
     "fr": ("veux", "veux", "veut", "voulons", "veulent"),
     "it": ("voglio", "vuoi", "vuole", "vogliamo", "vogliono"),
     "pt": ("quero", "queres", "quer", "queremos", "querem")},
    {"en": ("buy", "buy", "buys", "buy", "buy"), "es": ("compro", "compras", "compra", "compramos", "compran"),
     "fr": ("achète", "achètes", "achète", "achetons", "achètent"),
     "it": ("compro", "compri", "compra", "compriamo", "comprano"),
     "pt": ("compro", "compras", "compra", "compramos", "compram")},
    {"en": ("have", "have", "has", "have", "have"), "es": ("tengo", "tienes", "tiene", "tenemos", "tienen"),
     "fr": ("ai", "as", "a", "avons", "ont"), "it": ("ho", "hai", "ha", "abbiamo", "hanno"),
     "pt": ("tenho", "tens", "tem", "temos", "têm")},
    {"en": ("find", "find", "finds", "find", "find"),
     "es": ("encuentro", "encuentras", "encuentra", "encontramos", "encuentran"),
     "fr": ("trouve", "trouves", "trouve", "trouvons", "trouvent"),
     "it": ("trovo", "trovi", "trova", "troviamo", "trovano"),
     "pt": ("encontro", "encontras", "encontra", "encontramos", "encontram")},
    {"en": ("sell", "sell", "sells", "sell", "sell"), "es": ("vendo", "vendes", "vende", "vendemos", "venden"),
     "fr": ("vends", "vends", "vend", "vendons", "vendent"),
     "it": ("vendo", "vendi", "vende", "vendiamo", "vendono"),
     "pt": ("vendo", "vendes", "vende", "vendemos", "vendem")},
    {"en": ("look for", "look for", "looks for", "look for", "look for"),
     "es": ("busco", "buscas", "busca", "buscamos", "buscan"),
     "fr": ("cherche", "cherches", "cherche", "cherchons", "cherchent"),
     "it": ("cerco", "cerchi", "cerca", "cerchiamo", "cercano"),
     "pt": ("procuro", "procuras", "procura", "procuramos", "procuram")},
    {"en": ("take", "take", "takes", "take", "take"), "es": ("tomo", "tomas", "toma", "tomamos", "toman"),
     "fr": ("prends", "prends", "prend", "prenons", "prennent"),
     "it": ("prendo", "prendi", "prende", "prendiamo", "prendono"),
     "pt": ("pego", "pegas", "pega", "pegamos", "pegam")},
    {"en": ("carry", "carry", "carries", "carry", "carry"),
     "es": ("llevo", "llevas", "lleva", "llevamos", "llevan"),
     "fr": ("porte", "portes", "porte", "portons", "portent"),
     "it": ("porto", "porti", "porta", "portiamo", "portano"),
     "pt": ("levo", "levas", "leva", "levamos", "levam")},
    {"en": ("draw", "draw", "draws", "draw", "draw"),
     "es": ("dibujo", "dibujas", "dibuja", "dibujamos", "dibujan"),
     "fr": ("dessine", "dessines", "dessine", "dessinons", "dessinent"),
     "it": ("disegno", "disegni", "disegna", "disegniamo", "disegnano"),
     "pt": ("desenho", "desenhas", "desenha", "desenhamos", "desenham")},
]

OBJECTS: list[dict[str, str]] = [
    {"en": "the book", "es": "el libro", "fr": "le livre", "it": "il libro", "pt": "o livro"},
    {"en": "the apple", "es": "la manzana", "fr": "la pomme", "it": "la mela", "pt": "a maçã"},
    {"en": "the letter", "es": "la carta", "fr": "la lettre", "it": "la lettera", "pt": "a carta"},
    {"en": "the key", "es": "la llave", "fr": "la clé", "it": "la chiave", "pt": "a chave"},
    {"en": "the bag", "es": "el bolso", "fr": "le sac", "it": "la borsa", "pt": "a bolsa"},
    {"en": "the chair", "es": "la silla", "fr": "la chaise", "it": "la sedia", "pt": "a cadeira"},
    {"en": "the hat", "es": "el sombrero", "fr": "le chapeau", "it": "il cappello", "pt": "o chapéu"},
    {"en": "the bread", "es": "el pan", "fr": "le pain", "it": "il pane", "pt": "o pão"},
    {"en": "the cake", "es": "el pastel", "fr": "le gâteau", "it": "la torta", "pt": "o bolo"},
    {"en": "the newspaper", "es": "el periódico", "fr": "le journal", "it": "il giornale", "pt": "o jornal"},
    {"en": "the bottle", "es": "la botella", "fr": "la bouteille", "it": "la bottiglia", "pt": "a garrafa"},
    {"en": "the box", "es": "la caja", "fr": "la boîte", "it": "la scatola", "pt": "a caixa"},
    {"en": "the ball", "es": "la pelota", "fr": "le ballon", "it": "la palla", "pt": "a bola"},
    {"en": "the glass", "es": "el vaso", "fr": "le verre", "it": "il bicchiere", "pt": "o copo"},
    {"en": "the flower", "es": "la flor", "fr": "la fleur", "it": "il fiore", "pt": "a flor"},
]

TIMES: list[dict[str, str]] = [
    {"en": "today", "es": "hoy", "fr": "aujourd'hui", "it": "oggi", "pt": "hoje"},
    {"en": "now", "es": "ahora", "fr": "maintenant", "it": "adesso", "pt": "agora"},
    {"en": "every day", "es": "cada día", "fr": "chaque jour", "it": "ogni giorno", "pt": "todos os dias"},
    {"en": "in the morning", "es": "por la mañana", "fr": "le matin", "it": "la mattina", "pt": "de manhã"},
    {"en": "tonight", "es": "esta noche", "fr": "ce soir", "it": "stasera", "pt": "esta noite"},
    {"en": "on Sunday", "es": "el domingo", "fr": "dimanche", "it": "domenica", "pt": "no domingo"},
]

MIN_WORDS = 4


def _subj_verb(subj: int, verb: int, lang: str) -> str:
    person, forms = SUBJECTS[subj]
    s, v = forms[lang], VERBS[verb][lang][person]
    if lang == "fr" and s == "je" and v[0] in "aeiouhéèê":
        return f"j'{v}"  # French elision: j'ai, j'achète
    return f"{s} {v}"


def generate(slots: dict[str, int], lang: str) -> str:
    """Sentence for a slot dict {subj, verb, obj, time (-1 = none)} in `lang` (capitalised, with a full stop)."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, got {lang!r}")
    parts = [_subj_verb(slots["subj"], slots["verb"], lang), OBJECTS[slots["obj"]][lang]]
    if slots.get("time", -1) >= 0:
        parts.append(TIMES[slots["time"]][lang])
    s = " ".join(parts)
    return s[0].upper() + s[1:] + "."


def all_slots() -> list[dict[str, int]]:
    """Every slot combination whose sentence has >= MIN_WORDS words in every language."""
    out = []
    for s, v, o, t in itertools.product(range(len(SUBJECTS)), range(len(VERBS)), range(len(OBJECTS)),
                                        range(-1, len(TIMES))):
        slots = {"subj": s, "verb": v, "obj": o, "time": t}
        if all(len(generate(slots, lang).split()) >= MIN_WORDS for lang in LANGS):
            out.append(slots)
    return out


def make_tuples(n: int, seed: int) -> list[dict]:
    """`n` distinct slot combinations drawn without replacement (seeded), with their sentence in every language."""
    combos = all_slots()
    if not 0 < n <= len(combos):
        raise ValueError(f"n must be in [1, {len(combos)}], got {n}")
    idx = np.random.default_rng(seed).choice(len(combos), size=n, replace=False)
    return [{"tuple_id": f"t{i:04d}", "slots": dict(combos[j]),
             "text": {lang: generate(combos[j], lang) for lang in LANGS}} for i, j in enumerate(idx)]


def _words(t: dict) -> set[tuple[str, str]]:
    return {(lang, w) for lang in LANGS for w in normalize_text(t["text"][lang]).split()}


def split_tuples(tuples: list[dict], n_train: int, n_valid: int, n_test: int, seed: int) -> dict[str, list[dict]]:
    """Seeded train/valid/test split; every held-out word (per language) also occurs in train.

    Held-out sentences are unseen as wholes because tuples are distinct slot combinations (checked). Offending
    held-out tuples are swapped with train tuples whose words all stay covered; ValueError if impossible.
    """
    if min(n_train, n_valid, n_test) < 0 or n_train + n_valid + n_test > len(tuples):
        raise ValueError(f"split sizes {n_train}+{n_valid}+{n_test} exceed the {len(tuples)} tuples")
    order = np.random.default_rng(seed).permutation(len(tuples))
    train = [tuples[i] for i in order[:n_train]]
    held = [tuples[i] for i in order[n_train:n_train + n_valid + n_test]]
    counts: dict[tuple[str, str], int] = {}
    for t in train:
        for w in _words(t):
            counts[w] = counts.get(w, 0) + 1
    for hi, h in enumerate(held):
        if all(counts.get(w, 0) > 0 for w in _words(h)):
            continue
        for ti, t in enumerate(train):  # swap h into train, t out, if t's words stay covered afterwards
            hw, tw = _words(h), _words(t)
            if all(counts.get(w, 0) - 1 + (w in hw) > 0 for w in tw):
                for w in tw:
                    counts[w] -= 1
                for w in hw:
                    counts[w] = counts.get(w, 0) + 1
                train[ti], held[hi] = h, t
                break
        else:
            raise ValueError("cannot cover every held-out word in train: increase n_train")
    for h in held:
        assert all(counts.get(w, 0) > 0 for w in _words(h)), h
    train_text = {t["text"]["en"] for t in train}
    assert not any(h["text"]["en"] in train_text for h in held)
    return {"train": train, "valid": held[:n_valid], "test": held[n_valid:]}


_PUNCT = re.compile(r"[^\w\s']|_|\d")


def normalize_text(s: str) -> str:
    """Lower-case, punctuation removed (accents and apostrophes kept), whitespace collapsed."""
    s = unicodedata.normalize("NFC", s).lower().replace("\u2019", "'")
    return " ".join(_PUNCT.sub(" ", s).split())


def _lexicon_chars() -> str:
    chars: set[str] = set()
    for table in (SUBJECTS[i][1] for i in range(len(SUBJECTS))):
        chars.update("".join(table.values()))
    for v in VERBS:
        chars.update("".join("".join(f) for f in v.values()))
    for table in (*OBJECTS, *TIMES):
        chars.update("".join(table.values()))
    accented = sorted(c for c in normalize_text("".join(chars)) if c.isalpha() and c not in "abcdefghijklmnopqrstuvwxyz")
    return " '" + "abcdefghijklmnopqrstuvwxyz" + "".join(dict.fromkeys(accented))


CHARSET: str = _lexicon_chars()


def check_charset(text: str) -> None:
    """ValueError naming the offending characters if `text` has any outside CHARSET."""
    bad = sorted(set(text) - set(CHARSET))
    if bad:
        raise ValueError(f"characters {bad} are outside the ASR charset; normalise the text with normalize_text")


def _edit(a: str, b: str) -> int:
    if a == b:
        return 0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


@cache
def _phrases(lang: str) -> tuple[dict, dict, dict, dict]:
    sv = {normalize_text(_subj_verb(s, v, lang)): (s, v) for s in range(len(SUBJECTS)) for v in range(len(VERBS))}
    obj = {normalize_text(o[lang]): k for k, o in enumerate(OBJECTS)}
    tim = {normalize_text(t[lang]): k for k, t in enumerate(TIMES)}
    tim[""] = -1
    exact = {normalize_text(generate(sl, lang)): sl for sl in all_slots()}
    return sv, obj, tim, exact


@lru_cache(maxsize=65536)
def _closest(chunk: str, lang: str, kind: str) -> tuple[int, object]:
    """(edit distance, key) of the lexicon phrase of `kind` (sv | obj | time) closest to `chunk` (ties: the
    smaller key); memoised, since parse tries every segmentation and the cascade parses each source 4 times."""
    sv, obj, tim, _ = _phrases(lang)
    table = {"sv": sv, "obj": obj, "time": tim}[kind]
    return min((_edit(chunk, p), k) for p, k in table.items())


def parse(text: str, lang: str) -> dict[str, int]:
    """Best slot dict for a (possibly mis-recognised) sentence: exact lookup, else the segmentation into
    SUBJ+VERB | OBJ | TIME chunks minimising the total character edit distance to lexicon phrases."""
    sv, obj, tim, exact = _phrases(lang)
    norm = normalize_text(text)
    if norm in exact:
        return dict(exact[norm])
    words = norm.split()
    n = len(words)

    def best(kind: str, i: int, j: int) -> tuple[int, object]:
        return _closest(" ".join(words[i:j]), lang, kind)

    best_cost, best_slots = None, None
    sv_cache = {j: best("sv", 0, j) for j in range(0, min(n, 6) + 1)}
    for j, (c1, svk) in sv_cache.items():
        for k in range(j, min(n, j + 4) + 1):
            c2, ok = best("obj", j, k)
            c3, tk = best("time", k, n)
            cost = c1 + c2 + c3
            if best_cost is None or cost < best_cost:
                best_cost, best_slots = cost, {"subj": svk[0], "verb": svk[1], "obj": ok, "time": tk}
    assert best_slots is not None
    return best_slots


@cache
def lexicon(lang: str) -> tuple[str, ...]:
    """Every normalised word the grammar can produce in `lang` (sorted): the closed vocabulary an ASR
    evaluator's lexicon holds (asr.snap_to_lexicon)."""
    if lang not in LANGS:
        raise ValueError(f"language must be one of {LANGS}, got {lang!r}")
    words: set[str] = set()
    for s in range(len(SUBJECTS)):
        for v in range(len(VERBS)):
            words.update(normalize_text(_subj_verb(s, v, lang)).split())
    for table in (*OBJECTS, *TIMES):
        words.update(normalize_text(table[lang]).split())
    return tuple(sorted(words))


def dictionary_translate(text: str, src: str, tgt: str) -> str:
    """Cascade-baseline translation: parse `text` (normalised `src` sentence) into slots, generate `tgt`.

    Exact on clean input; ASR errors degrade gracefully (closest phrases by edit distance). Returns the
    normalised target sentence.
    """
    for lang in (src, tgt):
        if lang not in LANGS:
            raise ValueError(f"language must be one of {LANGS}, got {lang!r}")
    if not normalize_text(text):
        return ""
    return normalize_text(generate(parse(text, src), tgt))
