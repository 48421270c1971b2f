"""Text normalisation and word splitting for the word-level tokenizer.

A word keeps its inner apostrophes and digits ("i'm", "don't", "2nd"); with `keep_punctuation`,
each of . ! ? , is a token of its own, and every other character only separates words. The regex
states the rule; `split_many` applies the same rule to many texts at once with str methods, which
is what makes encoding a whole corpus practical, and hands the texts the str methods cannot treat
exactly (non-ASCII, stray apostrophes) back to the regex.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence

WORD_PUNCT = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[.!?,]")
WORD_ONLY = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
PUNCT = ".!?,"


def _ascii_table(keep_punctuation: bool) -> dict[int, str]:
    """str.translate table for `split_many`: ASCII letters, digits, apostrophes, newlines (and the
    kept punctuation) stay, every other ASCII character becomes a space (one character each, so
    str.translate can take its ASCII-only path)."""
    keep = set(string.ascii_letters + string.digits + "'\n" + (PUNCT if keep_punctuation else ""))
    return {c: chr(c) if chr(c) in keep else " " for c in range(128)}


_ASCII_TABLES = {keep: _ascii_table(keep) for keep in (True, False)}


def _stray_apostrophe(spaced: str) -> bool:
    """Whether a translated text has an apostrophe that is not between two letters/digits."""
    padded = f" {spaced} "
    return " '" in padded or "' " in padded or "''" in padded


def strip_accents(text: str) -> str:
    """Decompose (NFKD) and drop the combining marks: "café" -> "cafe"."""
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c))


def _fold(text: str, ascii_fold: bool) -> str:
    if ascii_fold and not text.isascii():  # ASCII has nothing to decompose or strip
        return strip_accents(text)
    return text


def _quotes_and_case(text: str, lowercase: bool) -> str:
    text = text.replace("\u2019", "'").replace("`", "'")
    return text.lower() if lowercase else text


def normalize(text: str, *, lowercase: bool, ascii_fold: bool) -> str:
    """Accents stripped (`ascii_fold`), curly quotes and backticks made apostrophes, lowercased."""
    return _quotes_and_case(_fold(text, ascii_fold), lowercase)


def split(text: str, *, lowercase: bool, ascii_fold: bool, keep_punctuation: bool) -> list[str]:
    """The words (and kept punctuation marks) of one text, after `normalize`."""
    pattern = WORD_PUNCT if keep_punctuation else WORD_ONLY
    return pattern.findall(normalize(text, lowercase=lowercase, ascii_fold=ascii_fold))


def split_many(
    texts: Sequence[str], *, lowercase: bool, ascii_fold: bool, keep_punctuation: bool
) -> list[list[str]]:
    """`[split(t) for t in texts]`, in bulk: ASCII texts without stray apostrophes are
    normalised, translated and split by str methods over all texts at once (no regex)."""
    if not texts:
        return []
    flags = {"lowercase": lowercase, "ascii_fold": ascii_fold, "keep_punctuation": keep_punctuation}
    joined = "\n".join(texts)
    if ascii_fold and not joined.isascii():
        joined = "\n".join([t if t.isascii() else strip_accents(t) for t in texts])
    if joined.count("\n") != len(texts) - 1:  # a text holds a newline of its own
        return [split(t, **flags) for t in texts]
    # replace and lower act per character, but for the final sigma, which a newline ends too
    normalized = _quotes_and_case(joined, lowercase)
    each = normalized.split("\n")  # == [normalize(t) for t in texts]
    pattern = WORD_PUNCT if keep_punctuation else WORD_ONLY
    regex_rows: list[int] = []  # split by the regex: non-ASCII texts, stray apostrophes
    if not normalized.isascii():  # str.translate's ASCII path: blank the other texts
        regex_rows = [k for k, text in enumerate(each) if not text.isascii()]
        normalized = "\n".join(["" if not text.isascii() else text for text in each])
    spaced = normalized.translate(_ASCII_TABLES[keep_punctuation])
    if keep_punctuation:
        for mark in PUNCT:
            spaced = spaced.replace(mark, f" {mark} ")
    spaced_texts = spaced.split("\n")
    words = list(map(str.split, spaced_texts))
    # the regex drops an apostrophe that is not between letters/digits, or splits there
    regex_rows += [k for k, t in enumerate(spaced_texts) if "'" in t and _stray_apostrophe(t)]
    for k in regex_rows:
        words[k] = pattern.findall(each[k])
    return words


def count_words(text: str, *, lowercase: bool = True, ascii_fold: bool = True) -> int:
    """Words of a text, punctuation excluded: the unit of `ppl_word` for every model family."""
    return len(WORD_ONLY.findall(normalize(text, lowercase=lowercase, ascii_fold=ascii_fold)))
