"""Word-level tokenizer and vocabulary for the seq2seq models (plain-typed state for checkpoints)."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain, repeat
from typing import Any

import torch

from dialoglab.data.dialogue import Example
from dialoglab.data.encoded import EncodedPairs

PAD, SOS, EOS, UNK, SEP = "<pad>", "<sos>", "<eos>", "<unk>", "<sep>"
SPECIALS = (PAD, SOS, EOS, UNK, SEP)

# A word keeps its inner apostrophes and digits ("i'm", "don't", "2nd"); punctuation is its own token.
_WORD_PUNCT = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[.!?,]")
_WORD_ONLY = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def _gather_padded(
    flat: torch.Tensor, offsets: torch.Tensor, index: torch.Tensor, extra: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `index` of a flat+offsets store as a (B, longest + extra) long tensor padded with
    pad_id, and their lengths (B,)."""
    starts = offsets[index]
    lengths = offsets[index + 1] - starts
    width = (int(lengths.max()) if len(index) else 0) + extra
    positions = torch.arange(width)
    real = positions < lengths.unsqueeze(1)  # (B, width)
    if flat.numel() == 0:
        return torch.full(real.shape, pad_id, dtype=torch.long), lengths
    gather = (starts.unsqueeze(1) + positions).clamp_(max=flat.numel() - 1)
    return torch.where(real, flat[gather].long(), pad_id), lengths


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
        if self.ascii_fold and not text.isascii():  # ASCII has nothing to decompose or strip
            text = self._strip_accents(text)
        text = text.replace("\u2019", "'").replace("`", "'")
        return text.lower() if self.lowercase else text

    def split(self, text: str) -> list[str]:
        pattern = _WORD_PUNCT if self.keep_punctuation else _WORD_ONLY
        return pattern.findall(self.normalize(text))

    @staticmethod
    def _strip_accents(text: str) -> str:
        text = unicodedata.normalize("NFKD", text)
        return "".join(c for c in text if not unicodedata.combining(c))

    # -- vocabulary ----------------------------------------------------------------------------
    def fit(self, texts: Iterable[str]) -> WordTokenizer:
        """Build the vocabulary from training texts: words seen >= min_count times."""
        counts = Counter(chain.from_iterable(map(self.split, texts)))
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
        return list(map(self.stoi.get, self.split(text), repeat(self.unk_id)))

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

    def encode_context(
        self,
        persona: Sequence[str],
        context: Sequence[str],
        encoded: dict[str, list[int]] | None = None,
    ) -> list[int]:
        """Persona lines then context turns, each followed by `<sep>` except the last turn.

        `encoded` memoises text -> ids across calls (a corpus line is a reply and a context).
        """
        pieces = [*persona, *context]
        ids: list[int] = []
        for k, text in enumerate(pieces):
            if k:
                ids.append(self.sep_id)
            ids.extend(self._encode_memo(text, encoded))
        return ids

    def _encode_memo(self, text: str, encoded: dict[str, list[int]] | None) -> list[int]:
        if encoded is None:
            return self.encode(text)
        ids = encoded.get(text)
        if ids is None:
            ids = encoded[text] = self.encode(text)
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
        encoded: dict[str, list[int]] = {}  # text -> ids: each distinct text is encoded once
        # count_words(decode(ids)) is the sum of count_words over the ids' words (they are joined
        # by spaces, punctuation counts 0), so each vocabulary entry is counted once here.
        words_of = [self.count_words(w) for w in self.itos]
        for ex in examples:
            src = self.encode_context(ex.persona, ex.context, encoded)
            tgt = self._encode_memo(ex.response, encoded)
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
            n_words.append(max(1, sum(words_of[i] for i in tgt)))
        return EncodedPairs.from_lists(sources, targets, n_words)

    def collate(self, split: EncodedPairs, indices: list[int]) -> dict[str, torch.Tensor]:
        """Pad a batch: src (B,S), decoder_input = <sos>+reply (B,T), target = reply+<eos> (B,T).

        Vectorised: a fixed number of tensor ops per batch, whatever its size (no per-row loop).
        """
        index = torch.as_tensor(indices, dtype=torch.long)
        src, src_lengths = _gather_padded(split.src, split.src_offsets, index, 1, self.pad_id)
        reply, tgt_lengths = _gather_padded(split.tgt, split.tgt_offsets, index, 1, self.pad_id)
        src.scatter_(1, src_lengths.unsqueeze(1), self.eos_id)  # (B, S): ids, <eos>, pads
        target = reply.scatter(1, tgt_lengths.unsqueeze(1), self.eos_id)  # (B, T)
        sos = torch.full((len(indices), 1), self.sos_id, dtype=torch.long)
        decoder_input = torch.cat([sos, reply[:, :-1]], dim=1)  # (B, T): <sos>, ids, pads
        return {
            "src": src,
            "src_lengths": src_lengths + 1,
            "decoder_input": decoder_input,
            "target": target,
            "n_words": split.n_words[index].long(),
            "index": index,
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
