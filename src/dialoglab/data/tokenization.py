"""Word-level tokenizer and vocabulary for the seq2seq models (plain-typed state for checkpoints)."""

from __future__ import annotations

import hashlib
import json
import re
import string
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain, count, repeat
from operator import attrgetter
from typing import Any

import numpy as np
import torch

from dialoglab.data.dialogue import Example
from dialoglab.data.encoded import EncodedPairs

PAD, SOS, EOS, UNK, SEP = "<pad>", "<sos>", "<eos>", "<unk>", "<sep>"
SPECIALS = (PAD, SOS, EOS, UNK, SEP)

# A word keeps its inner apostrophes and digits ("i'm", "don't", "2nd"); punctuation is its own token.
_WORD_PUNCT = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[.!?,]")
_WORD_ONLY = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_PUNCT = ".!?,"


def _ascii_table(keep_punctuation: bool) -> dict[int, str]:
    """str.translate table for `split_many`: ASCII letters, digits, apostrophes, newlines (and the
    kept punctuation) stay, every other ASCII character becomes a space (all 1-char: fast path)."""
    keep = set(string.ascii_letters + string.digits + "'\n" + (_PUNCT if keep_punctuation else ""))
    return {c: chr(c) if chr(c) in keep else " " for c in range(128)}


_ASCII_TABLES = {keep: _ascii_table(keep) for keep in (True, False)}
_CHUNK = 16_384  # texts tokenized at a time: bulk enough to be fast, small enough for memory


def _stray_apostrophe(spaced: str) -> bool:
    """Whether a translated text has an apostrophe that is not between two letters/digits."""
    padded = f" {spaced} "
    return " '" in padded or "' " in padded or "''" in padded


def _gather_runs(
    flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate flat[s : s + n] for each (s, n): the values and their offsets (len n + 1)."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    positions = np.repeat(starts - offsets[:-1], lengths)
    positions += np.arange(len(positions))
    return flat[positions], offsets


class _TokenTable:
    """The words of distinct texts, tokenized once, as word indices (vocabulary-independent).

    Text t is words[offsets[k] : offsets[k + 1]] with k = row[t]; `index` numbers the words in
    the order they were first seen, so one dict lookup per token both counts and encodes.
    """

    def __init__(self) -> None:
        self.index: defaultdict[str, int] = defaultdict(count().__next__)  # word -> its number
        self.row: dict[str, int] = {}
        self.words = np.zeros(0, dtype=np.int32)
        self.offsets = np.zeros(1, dtype=np.int64)

    def rows(self, tokenizer: WordTokenizer, texts: list[str]) -> np.ndarray:
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
        self._add(tokenizer, new)
        if len(new) == len(texts):  # distinct texts: rows in order
            rows[missing] = np.arange(start, start + len(new))
        else:
            rows[missing] = np.fromiter(map(self.row.__getitem__, texts), dtype=np.int64)
        return rows

    def _add(self, tokenizer: WordTokenizer, texts: list[str]) -> None:
        """Append new distinct texts, tokenized in chunks so that few word strings live at once."""
        lengths, words = [self.offsets[1:] - self.offsets[:-1]], [self.words]
        for at in range(0, len(texts), _CHUNK):
            tokens = tokenizer.split_many(texts[at : at + _CHUNK])
            lengths.append(np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens)))
            numbers = map(self.index.__getitem__, chain.from_iterable(tokens))  # new: next number
            words.append(np.fromiter(numbers, dtype=np.int32))
        self.row.update(zip(texts, range(len(self.row), len(self.row) + len(texts)), strict=True))
        self.words = np.concatenate(words)
        self.offsets = np.zeros(len(self.row) + 1, dtype=np.int64)
        np.cumsum(np.concatenate(lengths), out=self.offsets[1:])

    def ids(self, stoi: dict[str, int], unk_id: int, then: int) -> np.ndarray:
        """All the table's words as ids of the vocabulary `stoi` (flat, like `words`), followed
        by the id `then`."""
        id_of = np.fromiter(map(stoi.get, self.index, repeat(unk_id)), np.int32, len(self.index))
        ids = np.empty(len(self.words) + 1, dtype=np.int32)
        np.take(id_of, self.words, out=ids[:-1])
        ids[-1] = then
        return ids


def _texts_of(examples: Sequence[Example]) -> Iterator[str]:
    """Every text of the examples: persona lines, then context turns, then replies."""
    return chain(
        chain.from_iterable(map(attrgetter("persona"), examples)),
        chain.from_iterable(map(attrgetter("context"), examples)),
        map(attrgetter("response"), examples),
    )


def _interleave(rows: np.ndarray, counts: np.ndarray, sep: int) -> tuple[np.ndarray, np.ndarray]:
    """Each group's `counts[i]` consecutive `rows` with `sep` between them, and the groups'
    offsets in the result: [r0, sep, r1, sep, r2], [], [r3], ..."""
    sizes = np.maximum(2 * counts - 1, 0)
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    out = np.full(offsets[-1], sep, dtype=np.int64)
    firsts = np.cumsum(counts) - counts  # index in `rows` of each group's first row
    rank = np.arange(len(rows)) - np.repeat(firsts, counts)  # position within its group
    out[np.repeat(offsets[:-1], counts) + 2 * rank] = rows
    return out, offsets


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
        self._tokens: _TokenTable | None = None  # see `reusing_tokens`

    # -- text -> words -------------------------------------------------------------------------
    def normalize(self, text: str) -> str:
        return self._quotes_and_case(self._fold(text))

    def _fold(self, text: str) -> str:
        if self.ascii_fold and not text.isascii():  # ASCII has nothing to decompose or strip
            return self._strip_accents(text)
        return text

    def _quotes_and_case(self, text: str) -> str:
        text = text.replace("\u2019", "'").replace("`", "'")
        return text.lower() if self.lowercase else text

    def split(self, text: str) -> list[str]:
        pattern = _WORD_PUNCT if self.keep_punctuation else _WORD_ONLY
        return pattern.findall(self.normalize(text))

    def split_many(self, texts: Sequence[str]) -> list[list[str]]:
        """`[self.split(t) for t in texts]`, in bulk: ASCII texts without stray apostrophes are
        normalised, translated and split by str methods over all texts at once (no regex)."""
        if not texts:
            return []
        joined = "\n".join(texts)
        if self.ascii_fold and not joined.isascii():
            joined = "\n".join([t if t.isascii() else self._strip_accents(t) for t in texts])
        if joined.count("\n") != len(texts) - 1:  # a text holds a newline of its own
            return [self.split(t) for t in texts]
        # replace and lower act per character, but for the final sigma, which a newline ends too
        normalized = self._quotes_and_case(joined)
        each = normalized.split("\n")  # == [self.normalize(t) for t in texts]
        pattern = _WORD_PUNCT if self.keep_punctuation else _WORD_ONLY
        regex_rows: list[int] = []  # split by the regex: non-ASCII texts, stray apostrophes
        if not normalized.isascii():  # str.translate's fast path is for ASCII: blank the rest
            regex_rows = [k for k, text in enumerate(each) if not text.isascii()]
            normalized = "\n".join(["" if not text.isascii() else text for text in each])
        spaced = normalized.translate(_ASCII_TABLES[self.keep_punctuation])
        if self.keep_punctuation:
            for mark in _PUNCT:
                spaced = spaced.replace(mark, f" {mark} ")
        spaced_texts = spaced.split("\n")
        words = list(map(str.split, spaced_texts))
        # the regex drops an apostrophe that is not between letters/digits, or splits there
        regex_rows += [k for k, t in enumerate(spaced_texts) if "'" in t and _stray_apostrophe(t)]
        for k in regex_rows:
            words[k] = pattern.findall(each[k])
        return words

    @staticmethod
    def _strip_accents(text: str) -> str:
        text = unicodedata.normalize("NFKD", text)
        return "".join(c for c in text if not unicodedata.combining(c))

    # -- vocabulary ----------------------------------------------------------------------------
    def fit(self, texts: Iterable[str]) -> WordTokenizer:
        """Build the vocabulary from training texts: words seen >= min_count times."""
        table = _TokenTable()
        return self._fit_rows(table, table.rows(self, list(texts)))

    def fit_examples(self, examples: Sequence[Example]) -> WordTokenizer:
        """Fit on the distinct texts of `examples` (each counts once, however often it recurs)."""
        table = self._token_table()
        return self._fit_rows(table, table.rows(self, list(dict.fromkeys(_texts_of(examples)))))

    def _fit_rows(self, table: _TokenTable, rows: np.ndarray) -> WordTokenizer:
        """Specials, then the words of these texts seen >= min_count times by decreasing count,
        ties a-z."""
        if np.array_equal(rows, np.arange(len(table.row))):  # the whole table, in order
            words = table.words
        else:
            starts, ends = table.offsets[rows], table.offsets[rows + 1]
            words, _ = _gather_runs(table.words, starts, ends - starts)
        counts = np.bincount(words, minlength=len(table.index)).tolist()
        count_of = dict(zip(table.index, counts, strict=True))
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
        self._tokens = _TokenTable()
        try:
            yield
        finally:
            self._tokens = None

    def _token_table(self) -> _TokenTable:
        """The shared table inside `reusing_tokens`, else a new one."""
        return self._tokens if self._tokens is not None else _TokenTable()

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
        return len(_WORD_ONLY.findall(self.normalize(text)))

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
        rows = table.rows(self, texts)
        reply_rows = rows[len(texts) - len(examples) :]
        # ids of every text in the table, plus one row holding the <sep> between source texts
        ids = table.ids(self.stoi, self.unk_id, then=self.sep_id)
        offsets = np.append(table.offsets, table.offsets[-1] + 1)
        lengths = np.diff(offsets)
        # each source: its persona and context texts, with <sep> between them
        counts = np.fromiter(map(len, source_texts), dtype=np.int64, count=len(examples))
        pieces, groups = _interleave(rows[: len(texts) - len(examples)], counts, len(table.row))
        sources, piece_offsets = _gather_runs(ids, offsets[pieces], lengths[pieces])
        src_bounds = piece_offsets[groups]  # where each example's source starts and ends
        src_start, src_len = src_bounds[:-1], np.diff(src_bounds)
        tgt_start, tgt_len = offsets[reply_rows], lengths[reply_rows]

        keep = tgt_len > 0
        if length_policy == "filter":
            keep &= (src_len <= limit) & (tgt_len <= limit)
        else:  # truncate: the context keeps its end, the reply its start
            src_start = src_start + np.maximum(src_len - limit, 0)
            src_len, tgt_len = np.minimum(src_len, limit), np.minimum(tgt_len, limit)
        src, src_offsets = _gather_runs(sources, src_start[keep], src_len[keep])
        tgt, tgt_offsets = _gather_runs(ids, tgt_start[keep], tgt_len[keep])
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
        words_only = WordTokenizer(self.lowercase, self.ascii_fold, keep_punctuation=False)
        return np.fromiter(map(len, words_only.split_many(self.itos)), dtype=np.int64)

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
