"""Word-level tokenizer and vocabulary for the seq2seq models (plain-typed state for checkpoints)."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from dialoglab.data.dialogue import Example
from dialoglab.data.encoded import EncodedPairs

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

    # -- examples and batches (the seq2seq layout) ---------------------------------------------
    def encode_examples(
        self, examples: Sequence[Example], max_length: int, length_policy: str
    ) -> EncodedPairs:
        """(persona + context, reply) ids, filtered or truncated to `max_length` tokens with <eos>."""
        limit = max_length - 1  # room for <eos>
        sources, targets, n_words = [], [], []
        for ex in examples:
            src = self.encode_context(ex.persona, ex.context)
            tgt = self.encode(ex.response)
            if not tgt:
                continue
            if len(src) > limit or len(tgt) > limit:
                if length_policy == "filter":
                    continue
                src, tgt = (
                    src[-limit:],
                    tgt[:limit],
                )  # the context keeps its end, the reply its start
            sources.append(src)
            targets.append(tgt)
            n_words.append(max(1, self.count_words(self.decode(tgt))))
        return EncodedPairs.from_lists(sources, targets, n_words)

    def collate(self, split: EncodedPairs, indices: list[int]) -> dict[str, torch.Tensor]:
        """Pad a batch: src (B,S), decoder_input = <sos>+reply (B,T), target = reply+<eos> (B,T)."""
        src_lengths = split.source_lengths()[indices] + 1
        tgt_lengths = split.target_lengths()[indices] + 1
        B, S, T = len(indices), int(src_lengths.max()), int(tgt_lengths.max())
        src = torch.full((B, S), self.pad_id, dtype=torch.long)
        decoder_input = torch.full((B, T), self.pad_id, dtype=torch.long)
        target = torch.full((B, T), self.pad_id, dtype=torch.long)
        for row, i in enumerate(indices):
            s, t = split.source(i), split.target(i)
            src[row, : len(s)] = s
            src[row, len(s)] = self.eos_id
            decoder_input[row, 0] = self.sos_id
            decoder_input[row, 1 : len(t) + 1] = t
            target[row, : len(t)] = t
            target[row, len(t)] = self.eos_id
        return {
            "src": src,
            "src_lengths": src_lengths,
            "decoder_input": decoder_input,
            "target": target,
            "n_words": split.n_words[indices].long(),
            "index": torch.tensor(indices, dtype=torch.long),
        }

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
