"""The words of many texts, tokenized once and kept as numbers, for the word tokenizer.

Fitting the vocabulary and encoding three splits all need the words of the same texts; the table
tokenizes each distinct text once and stores its words as numbers (independent of any vocabulary),
so counting words and mapping them to ids are array operations over the whole corpus.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from itertools import chain, count, repeat
from operator import attrgetter

import numpy as np

from dialoglab.data.dialogue import Example
from dialoglab.data.ragged import gather_runs

CHUNK = 16_384  # texts tokenized at a time: few word strings live at once

SplitMany = Callable[[list[str]], list[list[str]]]


class TokenTable:
    """The words of distinct texts, tokenized once, as word indices (vocabulary-independent).

    Text t is words[offsets[k] : offsets[k + 1]] with k = row[t]; `index` numbers the words in
    the order they were first seen, so one dict lookup per token both counts and encodes.
    """

    def __init__(self) -> None:
        self.index: defaultdict[str, int] = defaultdict(count().__next__)  # word -> its number
        self.row: dict[str, int] = {}
        self.words = np.zeros(0, dtype=np.int32)
        self.offsets = np.zeros(1, dtype=np.int64)

    def rows(self, split_many: SplitMany, texts: list[str]) -> np.ndarray:
        """The row of each text; those not in the table yet are tokenized first, in bulk."""
        if self.row:
            rows = np.fromiter(map(self.row.get, texts, repeat(-1)), np.int64, count=len(texts))
            missing = np.flatnonzero(rows < 0)
            if len(missing) == 0:
                return rows
            if len(missing) < len(texts):
                texts = [texts[k] for k in missing.tolist()]
        else:  # a new table: every text is missing
            rows, missing = np.empty(len(texts), dtype=np.int64), slice(None)
        new = list(dict.fromkeys(texts))
        start = len(self.row)
        self._add(split_many, new)
        if len(new) == len(texts):  # distinct texts: rows in order
            rows[missing] = np.arange(start, start + len(new))
        else:
            rows[missing] = np.fromiter(map(self.row.__getitem__, texts), dtype=np.int64)
        return rows

    def _add(self, split_many: SplitMany, texts: list[str]) -> None:
        """Append new distinct texts, tokenized in chunks so that few word strings live at once."""
        lengths, words = [self.offsets[1:] - self.offsets[:-1]], [self.words]
        for at in range(0, len(texts), CHUNK):
            tokens = split_many(texts[at : at + CHUNK])
            lengths.append(np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens)))
            numbers = map(self.index.__getitem__, chain.from_iterable(tokens))  # new: next number
            words.append(np.fromiter(numbers, dtype=np.int32))
        self.row.update(zip(texts, range(len(self.row), len(self.row) + len(texts)), strict=True))
        self.words = np.concatenate(words)
        self.offsets = np.zeros(len(self.row) + 1, dtype=np.int64)
        np.cumsum(np.concatenate(lengths), out=self.offsets[1:])

    def word_counts(self, rows: np.ndarray) -> dict[str, int]:
        """How often each word of the table occurs in the texts `rows` (0 for words of others)."""
        if np.array_equal(rows, np.arange(len(self.row))):  # the whole table, in order
            words = self.words
        else:
            starts, ends = self.offsets[rows], self.offsets[rows + 1]
            words, _ = gather_runs(self.words, starts, ends - starts)
        counts = np.bincount(words, minlength=len(self.index)).tolist()
        return dict(zip(self.index, counts, strict=True))

    def ids(self, stoi: dict[str, int], unk_id: int, then: int) -> np.ndarray:
        """All the table's words as ids of the vocabulary `stoi` (flat, like `words`), followed
        by the id `then`."""
        id_of = np.fromiter(map(stoi.get, self.index, repeat(unk_id)), np.int32, len(self.index))
        ids = np.empty(len(self.words) + 1, dtype=np.int32)
        np.take(id_of, self.words, out=ids[:-1])
        ids[-1] = then
        return ids


def texts_of(examples: Sequence[Example]) -> Iterator[str]:
    """Every text of the examples: persona lines, then context turns, then replies."""
    return chain(
        chain.from_iterable(map(attrgetter("persona"), examples)),
        chain.from_iterable(map(attrgetter("context"), examples)),
        map(attrgetter("response"), examples),
    )
