"""Word-level tokenizer and vocabulary for the seq2seq models (plain-typed state for checkpoints)."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from dialoglab.data.dialogue import Example

PAD, SOS, EOS, UNK, SEP = "<pad>", "<sos>", "<eos>", "<unk>", "<sep>"
SPECIALS = (PAD, SOS, EOS, UNK, SEP)

# A word keeps its inner apostrophes and digits ("i'm", "don't", "2nd"); punctuation is its own token.
_WORD_PUNCT = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[.!?,]")
_WORD_ONLY = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


class WordTokenizer:
    """Normalise text, split it into words, and map words to ids with an `<unk>` fallback.

    Unlike the PyTorch chatbot tutorial, apostrophes and digits are kept ("i'm" stays one word)
    and rare words become `<unk>` instead of throwing the whole pair away.
    """

    kind = "word"

    def __init__(
        self,
        lowercase: bool = True,
        ascii_fold: bool = True,
        keep_punctuation: bool = True,
        min_count: int = 1,
        max_vocab_size: int | None = None,
    ) -> None:
        if min_count < 1:
            raise ValueError(f"model.tokenizer.min_count must be >= 1, got {min_count}")
        self.lowercase = lowercase
        self.ascii_fold = ascii_fold
        self.keep_punctuation = keep_punctuation
        self.min_count = min_count
        self.max_vocab_size = max_vocab_size
        self.itos: list[str] = list(SPECIALS)
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        self.fitted = False

    # -- text -> words -------------------------------------------------------------------------
    def normalize(self, text: str) -> str:
        if self.ascii_fold:
            text = unicodedata.normalize("NFKD", text)
            text = "".join(c for c in text if not unicodedata.combining(c))
        text = text.replace("\u2019", "'").replace("`", "'")
        return text.lower() if self.lowercase else text

    def split(self, text: str) -> list[str]:
        pattern = _WORD_PUNCT if self.keep_punctuation else _WORD_ONLY
        return pattern.findall(self.normalize(text))

    # -- vocabulary ----------------------------------------------------------------------------
    def fit(self, texts: Iterable[str]) -> WordTokenizer:
        """Build the vocabulary from training texts: words seen >= min_count times."""
        counts = Counter(w for text in texts for w in self.split(text))
        words = [w for w, n in counts.items() if n >= self.min_count and w not in self.stoi]
        words.sort(key=lambda w: (-counts[w], w))
        if self.max_vocab_size is not None:
            words = words[: max(0, self.max_vocab_size - len(SPECIALS))]
        self.itos = list(SPECIALS) + words
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.fitted = True
        return self

    def fit_examples(self, examples: Sequence[Example]) -> WordTokenizer:
        texts = {t for ex in examples for t in (*ex.persona, *ex.context, ex.response)}
        return self.fit(sorted(texts))

    def __len__(self) -> int:
        return len(self.itos)

    @property
    def pad_id(self) -> int:
        return self.stoi[PAD]

    @property
    def sos_id(self) -> int:
        return self.stoi[SOS]

    @property
    def eos_id(self) -> int:
        return self.stoi[EOS]

    @property
    def unk_id(self) -> int:
        return self.stoi[UNK]

    @property
    def sep_id(self) -> int:
        return self.stoi[SEP]

    # -- encoding ------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        unk = self.unk_id
        return [self.stoi.get(w, unk) for w in self.split(text)]

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        words = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if skip_special and i in (self.pad_id, self.sos_id):
                continue
            words.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        text = " ".join(words)
        return re.sub(r" ([.!?,])", r"\1", text)

    def encode_context(self, persona: Sequence[str], context: Sequence[str]) -> list[int]:
        """Persona lines then context turns, each followed by `<sep>` except the last turn."""
        pieces = [*persona, *context]
        ids: list[int] = []
        for k, text in enumerate(pieces):
            if k:
                ids.append(self.sep_id)
            ids.extend(self.encode(text))
        return ids

    def count_words(self, text: str) -> int:
        """Words of a reference reply, the unit of `ppl_word` (punctuation tokens excluded)."""
        return len(_WORD_ONLY.findall(self.normalize(text)))

    # -- state ---------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "lowercase": self.lowercase,
            "ascii_fold": self.ascii_fold,
            "keep_punctuation": self.keep_punctuation,
            "min_count": self.min_count,
            "max_vocab_size": self.max_vocab_size,
        }

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config(), "itos": list(self.itos)}

    def load_state_dict(self, state: dict[str, Any]) -> WordTokenizer:
        self.itos = list(state["itos"])
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.fitted = True
        return self

    def fingerprint(self) -> str:
        """Short hash of the vocabulary (to tell whether two tokenizers encode alike)."""
        return hashlib.sha256(json.dumps(self.itos).encode()).hexdigest()[:16]
