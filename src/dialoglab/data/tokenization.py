"""Word-level tokenizer and vocabulary for the seq2seq models (plain-typed state for checkpoints).

The pieces live beside it: text normalisation and word splitting in `word_splitting`, the
table of tokenized texts shared by fitting and encoding in `token_table`, and the flat+offsets
array helpers in `ragged`. This module keeps the class that configs name
(`dialoglab.data.tokenization.WordTokenizer`) and the special tokens.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from itertools import chain, repeat
from operator import attrgetter
from typing import Any

import numpy as np
import torch

from dialoglab.data import word_splitting
from dialoglab.data.dialogue import Example
from dialoglab.data.encoded import EncodedPairs
from dialoglab.data.ragged import gather_padded, gather_runs, interleave
from dialoglab.data.token_table import TokenTable, texts_of

PAD, SOS, EOS, UNK, SEP = "<pad>", "<sos>", "<eos>", "<unk>", "<sep>"
SPECIALS = (PAD, SOS, EOS, UNK, SEP)


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
        self._tokens: TokenTable | None = None  # see `reusing_tokens`

    # -- text -> words (see word_splitting) ----------------------------------------------------
    def _flags(self) -> dict[str, bool]:
        return {
            "lowercase": self.lowercase,
            "ascii_fold": self.ascii_fold,
            "keep_punctuation": self.keep_punctuation,
        }

    def normalize(self, text: str) -> str:
        return word_splitting.normalize(text, lowercase=self.lowercase, ascii_fold=self.ascii_fold)

    def split(self, text: str) -> list[str]:
        return word_splitting.split(text, **self._flags())

    def split_many(self, texts: Sequence[str]) -> list[list[str]]:
        """`[self.split(t) for t in texts]`, in bulk (see `word_splitting.split_many`)."""
        return word_splitting.split_many(texts, **self._flags())

    # -- vocabulary ----------------------------------------------------------------------------
    def fit(self, texts: Iterable[str]) -> WordTokenizer:
        """Build the vocabulary from training texts: words seen >= min_count times."""
        table = TokenTable()
        return self._fit_rows(table, table.rows(self.split_many, list(texts)))

    def fit_examples(self, examples: Sequence[Example]) -> WordTokenizer:
        """Fit on the distinct texts of `examples` (each counts once, however often it recurs)."""
        table = self._token_table()
        texts = list(dict.fromkeys(texts_of(examples)))
        return self._fit_rows(table, table.rows(self.split_many, texts))

    def _fit_rows(self, table: TokenTable, rows: np.ndarray) -> WordTokenizer:
        """Specials, then the words of these texts seen >= min_count times by decreasing count,
        ties a-z."""
        count_of = table.word_counts(rows)
        vocab = [w for w, n in count_of.items() if n >= self.min_count and w not in SPECIALS]
        vocab.sort(key=lambda w: (-count_of[w], w))
        if self.max_vocab_size is not None:
            vocab = vocab[: max(0, self.max_vocab_size - len(SPECIALS))]
        self.itos = list(SPECIALS) + vocab
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.fitted = True
        return self

    @contextmanager
    def reusing_tokens(self) -> Iterator[None]:
        """Within the block, each distinct text is tokenized once: fit_examples and every
        encode_examples call share one table of tokenized texts (dropped at the end)."""
        self._tokens = TokenTable()
        try:
            yield
        finally:
            self._tokens = None

    def _token_table(self) -> TokenTable:
        """The shared table inside `reusing_tokens`, else a new one."""
        return self._tokens if self._tokens is not None else TokenTable()

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

    def encode_context(self, persona: Sequence[str], context: Sequence[str]) -> list[int]:
        """Persona lines then context turns, each followed by `<sep>` except the last turn."""
        ids: list[int] = []
        for k, text in enumerate([*persona, *context]):
            if k:
                ids.append(self.sep_id)
            ids.extend(self.encode(text))
        return ids

    def count_words(self, text: str) -> int:
        """Words of a reference reply, the unit of `ppl_word` (punctuation tokens excluded)."""
        return word_splitting.count_words(
            text, lowercase=self.lowercase, ascii_fold=self.ascii_fold
        )

    # -- examples and batches (the seq2seq layout) ---------------------------------------------
    def encode_examples(
        self, examples: Sequence[Example], max_length: int, length_policy: str
    ) -> EncodedPairs:
        """(persona + context, reply) ids, filtered or truncated to `max_length` tokens with <eos>.

        Vectorised: each distinct text is tokenized once, then sources and replies are gathered
        from its ids with numpy. Gives what the per-example loop over `encode_context` (with
        `<sep>` between texts) and `encode` would.
        """
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (words + <eos>), got {max_length}")
        limit = max_length - 1  # room for <eos>
        table = self._token_table()
        source_texts = [(*ex.persona, *ex.context) for ex in examples]
        texts = [*chain.from_iterable(source_texts), *map(attrgetter("response"), examples)]
        rows = table.rows(self.split_many, texts)
        reply_rows = rows[len(texts) - len(examples) :]
        # ids of every text in the table, plus one row holding the <sep> between source texts
        ids = table.ids(self.stoi, self.unk_id, then=self.sep_id)
        offsets = np.append(table.offsets, table.offsets[-1] + 1)
        lengths = np.diff(offsets)
        # each source: its persona and context texts, with <sep> between them
        counts = np.fromiter(map(len, source_texts), dtype=np.int64, count=len(examples))
        pieces, groups = interleave(rows[: len(texts) - len(examples)], counts, len(table.row))
        sources, piece_offsets = gather_runs(ids, offsets[pieces], lengths[pieces])
        src_bounds = piece_offsets[groups]  # where each example's source starts and ends
        src_start, src_len = src_bounds[:-1], np.diff(src_bounds)
        tgt_start, tgt_len = offsets[reply_rows], lengths[reply_rows]

        keep = tgt_len > 0
        if length_policy == "filter":
            keep &= (src_len <= limit) & (tgt_len <= limit)
        else:  # truncate: the context keeps its end, the reply its start
            src_start = src_start + np.maximum(src_len - limit, 0)
            src_len, tgt_len = np.minimum(src_len, limit), np.minimum(tgt_len, limit)
        src, src_offsets = gather_runs(sources, src_start[keep], src_len[keep])
        tgt, tgt_offsets = gather_runs(ids, tgt_start[keep], tgt_len[keep])
        # count_words(decode(ids)) is the sum of count_words over the ids' words (they are joined
        # by spaces, punctuation counts 0), so each vocabulary entry is counted once here.
        words_of = self._words_per_id()
        words = np.concatenate([[0], np.cumsum(words_of[tgt])])
        n_words = np.maximum(words[tgt_offsets[1:]] - words[tgt_offsets[:-1]], 1)
        return EncodedPairs(
            torch.from_numpy(src),
            torch.from_numpy(src_offsets),
            torch.from_numpy(tgt),
            torch.from_numpy(tgt_offsets),
            torch.from_numpy(n_words.astype(np.int32)),
        )

    def _words_per_id(self) -> np.ndarray:
        """count_words of each vocabulary entry: what a tokenizer without punctuation splits."""
        words_only = partial(
            word_splitting.split_many,
            lowercase=self.lowercase,
            ascii_fold=self.ascii_fold,
            keep_punctuation=False,
        )
        return np.fromiter(map(len, words_only(self.itos)), dtype=np.int64)

    def collate(self, split: EncodedPairs, indices: list[int]) -> dict[str, torch.Tensor]:
        """Pad a batch: src (B,S), decoder_input = <sos>+reply (B,T), target = reply+<eos> (B,T).

        Vectorised: a fixed number of tensor ops per batch, whatever its size (no per-row loop).
        """
        index = torch.as_tensor(indices, dtype=torch.long)
        src, src_lengths = gather_padded(split.src, split.src_offsets, index, 1, self.pad_id)
        reply, tgt_lengths = gather_padded(split.tgt, split.tgt_offsets, index, 1, self.pad_id)
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
