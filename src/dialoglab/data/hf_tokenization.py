"""Byte-level BPE (or a pretrained Hugging Face tokenizer) for the causal-LM models.

`HFTokenizer` wraps a Hugging Face `tokenizers.Tokenizer`: it trains or loads it, adds the special
tokens of the layout, turns text into ids and back, and saves itself into checkpoints. How ids
become one training sequence (persona, history and reply, token types, labels, packing) is the
causal-LM layout, in `causal_layout`. Configs name the class by this module's path
(`dialoglab.data.hf_tokenization.HFTokenizer`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from dialoglab.data import causal_layout
from dialoglab.data.causal_layout import IGNORE_INDEX, LayoutIds, first_fit_decreasing
from dialoglab.data.dialogue import Example
from dialoglab.data.encoded import EncodedPairs
from dialoglab.data.word_splitting import count_words
from dialoglab.errors import CheckpointError, ConfigError
from dialoglab.hf_hub import load_pretrained

__all__ = ["IGNORE_INDEX", "HFTokenizer", "count_words", "first_fit_decreasing"]


class HFTokenizer:
    """Hugging Face `tokenizers` BPE + the causal-LM layout (see `causal_layout`).

    `pretrained` (a hub name or a local directory) loads that model's tokenizer; otherwise a
    byte-level BPE of `vocab_size` is trained on the training split only. Either way the special
    tokens below are added when missing. Loading and training happen in `fit_examples`, so a
    checkpoint's tokenizer is rebuilt from its saved JSON without the hub or the corpus.

    `max_length` is the token budget of a whole example (persona + history + reply); null uses
    `data.max_length`. `pack_to` packs several short examples into one row of that many tokens
    (position ids restart per example and attention stays within it); null: one example a row.
    """

    kind = "hf_bpe"

    def __init__(
        self,
        pretrained: str | None = None,
        vocab_size: int = 8000,
        min_frequency: int = 2,
        lowercase: bool = False,
        max_length: int | None = None,
        max_persona_tokens: int = 64,
        pack_to: int | None = None,
        bos_token: str = "<|endoftext|>",
        pad_token: str = "<pad>",
        eot_token: str = "<eot>",
        persona_token: str = "<persona>",
        user_token: str = "<user>",
        bot_token: str = "<bot>",
    ) -> None:
        if max_length is not None and max_length < 4:
            raise ConfigError(f"model.tokenizer.max_length must be >= 4 tokens, got {max_length}")
        if pack_to is not None and pack_to < 4:
            raise ConfigError(f"model.tokenizer.pack_to must be null or >= 4, got {pack_to}")
        if vocab_size < 64:
            raise ConfigError(f"model.tokenizer.vocab_size must be >= 64, got {vocab_size}")
        specials = [bos_token, pad_token, eot_token, persona_token, user_token, bot_token]
        if len(set(specials)) != len(specials):
            raise ConfigError(f"model.tokenizer special tokens must differ, got {specials}")
        self.pretrained = str(pretrained) if pretrained else None
        self.vocab_size = vocab_size
        self.min_frequency = min_frequency
        self.lowercase = lowercase
        self.max_length = max_length
        self.max_persona_tokens = max_persona_tokens
        self.pack_to = pack_to
        self.bos_token, self.pad_token, self.eot_token = bos_token, pad_token, eot_token
        self.persona_token, self.user_token, self.bot_token = persona_token, user_token, bot_token
        self.specials = specials
        self.backend: Any = None  # tokenizers.Tokenizer once fitted or loaded
        self.fitted = False

    # -- fitting -------------------------------------------------------------------------------
    def fit_examples(self, examples: Sequence[Example]) -> HFTokenizer:
        if self.pretrained:
            from transformers import AutoTokenizer

            hf = load_pretrained(AutoTokenizer.from_pretrained, self.pretrained)
            backend = getattr(hf, "backend_tokenizer", None)
            if backend is None:
                raise ConfigError(
                    f"model.pretrained={self.pretrained!r}: its tokenizer has no fast "
                    "(tokenizers) version; save one with tokenizer.json in the directory"
                )
            from tokenizers import Tokenizer

            self.backend = Tokenizer.from_str(backend.to_str())  # a private copy
        else:
            texts = sorted({t for ex in examples for t in (*ex.persona, *ex.context, ex.response)})
            self.backend = self._train_bpe(texts)
        self._add_specials()
        self.fitted = True
        return self

    def _train_bpe(self, texts: list[str]) -> Any:
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        steps = [normalizers.NFC()] + ([normalizers.Lowercase()] if self.lowercase else [])
        tok.normalizer = normalizers.Sequence(steps)
        # A space before every text: a word is the same token first in a turn or later on.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=self.vocab_size,
            min_frequency=self.min_frequency,
            special_tokens=list(self.specials),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return tok

    def _add_specials(self) -> None:
        from tokenizers import AddedToken

        missing = [t for t in self.specials if self.backend.token_to_id(t) is None]
        if missing:
            self.backend.add_special_tokens(
                [AddedToken(t, special=True, normalized=False) for t in missing]
            )
        self._set_ids()

    def _set_ids(self) -> None:
        ids = [self.backend.token_to_id(t) for t in self.specials]
        if any(i is None for i in ids):
            missing = [t for t, i in zip(self.specials, ids, strict=True) if i is None]
            raise CheckpointError(f"the saved tokenizer lacks the special tokens {missing}")
        self.bos_id, self.pad_id, self.eos_id, self.persona_id, self.user_id, self.bot_id = ids
        self.special_ids = frozenset(ids)
        self.markers = frozenset((self.persona_id, self.user_id, self.bot_id))
        self.layout = LayoutIds(
            self.pad_id, self.eos_id, self.persona_id, self.user_id, self.bot_id
        )

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True) if self.backend else 0

    @property
    def eot_id(self) -> int:
        return self.eos_id

    # -- text <-> ids --------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Ids of plain text; special-token spellings inside the text are dropped, not obeyed."""
        ids = self.backend.encode(text, add_special_tokens=False).ids
        return [i for i in ids if i not in self.special_ids]

    def encode_many(self, texts: Sequence[str]) -> dict[str, list[int]]:
        """`encode` of each distinct text, in one batched (parallel) call."""
        unique = list(dict.fromkeys(texts))
        encodings = self.backend.encode_batch(unique, add_special_tokens=False)
        special = self.special_ids
        return {
            text: [i for i in enc.ids if i not in special]
            for text, enc in zip(unique, encodings, strict=True)
        }

    def decode(self, ids: Sequence[int]) -> str:
        """Text up to the first `<eot>`, special tokens skipped."""
        kept = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i not in self.special_ids and i >= 0:
                kept.append(i)
        return self.backend.decode(kept, skip_special_tokens=True).strip()

    # -- the layout ----------------------------------------------------------------------------
    @staticmethod
    def persona_text(persona: Sequence[str]) -> str:
        return " ".join(p.strip() for p in persona if p.strip())

    def encode_prompt(
        self,
        persona: Sequence[str],
        context: Sequence[str],
        budget: int,
        encoded: dict[str, list[int]] | None = None,
    ) -> list[int]:
        """`<persona> ... <user> ... <eot> ... <bot>` within `budget` tokens (history cut on the left).

        `encoded` maps texts to their ids when they were encoded in bulk (`encode_many`).
        """

        def ids_of(text: str) -> list[int]:
            return encoded[text] if encoded is not None and text in encoded else self.encode(text)

        text = self.persona_text(persona)
        persona_ids = ids_of(text) if text else None
        turns = [ids_of(turn) for turn in context]
        return causal_layout.prompt_ids(
            persona_ids, turns, budget, self.max_persona_tokens, self.layout
        )

    def token_types(self, ids: Sequence[int]) -> list[int]:
        """Each token's segment marker (the last marker at or before it); padding is `<pad>`."""
        return causal_layout.token_types(ids, self.layout)

    def encode_examples(
        self, examples: Sequence[Example], max_length: int, length_policy: str
    ) -> EncodedPairs:
        """Prompt ids (persona + history + `<bot>`) as sources, reply + `<eot>` as targets."""
        budget = self.max_length or max_length
        if budget < 4:
            raise ConfigError(f"a causal-LM example needs >= 4 tokens, got max_length={budget}")
        encoded = self.encode_many(
            [
                t
                for ex in examples
                for t in (self.persona_text(ex.persona), *ex.context, ex.response)
            ]
        )
        prompts, targets, n_words = [], [], []
        for ex in examples:
            reply = encoded[ex.response]
            if not reply:
                continue
            words = count_words(ex.response)
            if len(reply) + 2 > budget:  # <bot> + reply + <eot>
                if length_policy == "filter":
                    continue
                reply = reply[: budget - 2]  # the reply keeps its start
                words = count_words(self.decode(reply))
            target = [*reply, self.eos_id]
            prompts.append(
                self.encode_prompt(ex.persona, ex.context, budget - len(target), encoded)
            )
            targets.append(target)
            n_words.append(max(1, words))
        return EncodedPairs.from_lists(prompts, targets, n_words)

    def left_pad(self, prompts: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Prompts left-padded for batched generation: ids, attention mask and token types."""
        return causal_layout.left_pad(prompts, self.layout)

    def collate(self, split: EncodedPairs, indices: list[int]) -> dict[str, torch.Tensor]:
        """A batch for `CausalLMModule`.

        Row tensors (one row per example, or per pack of examples when `pack_to` is set):
        input_ids, token_type_ids, labels (-100 outside replies), and attention_mask (right
        padding) or, when packing, position_ids (see `causal_layout.training_rows`). Example
        tensors: prompt_ids / prompt_mask / prompt_types (left-padded, for generation),
        reply_ids (reply + `<eot>`, right-padded), n_words, index.
        """
        prompts = [split.source(i).tolist() for i in indices]
        replies = [split.target(i).tolist() for i in indices]
        batch = causal_layout.training_rows(prompts, replies, self.pack_to, self.layout)
        batch.update(self.left_pad(prompts))
        batch["reply_ids"] = causal_layout.right_pad(replies, self.pad_id)
        batch["n_words"] = split.n_words[indices].long()
        batch["index"] = torch.tensor(indices, dtype=torch.long)
        return batch

    # -- reading prompts back ------------------------------------------------------------------
    def segments(self, ids: Sequence[int]) -> list[tuple[str, str]]:
        """(marker name, text) of each segment of a prompt, e.g. [("persona", ...), ("user", ...)]."""
        names = {self.persona_id: "persona", self.user_id: "user", self.bot_id: "bot"}
        out: list[tuple[str, list[int]]] = []
        for i in (int(i) for i in ids):
            if i in names:
                out.append((names[i], []))
            elif out and i not in self.special_ids:
                out[-1][1].append(i)
        return [(name, self.backend.decode(toks).strip()) for name, toks in out if toks]

    def describe_prompt(self, ids: Sequence[int]) -> str:
        return " | ".join(f"{name}: {text}" for name, text in self.segments(ids))

    def personas(self, split: EncodedPairs, limit: int) -> list[str]:
        """Distinct persona texts of a split's prompts, in split order (at most `limit`)."""
        found: list[str] = []
        for i in range(len(split)):
            if len(found) >= limit:
                break
            persona = next(
                (t for n, t in self.segments(split.source(i).tolist()) if n == "persona"), ""
            )
            if persona and persona not in found:
                found.append(persona)
        return found

    # -- state ---------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """What shapes the encoded data (the cache key); `pack_to` only changes batching."""
        return {
            "kind": self.kind,
            "pretrained": self.pretrained,
            "vocab_size": self.vocab_size,
            "min_frequency": self.min_frequency,
            "lowercase": self.lowercase,
            "max_length": self.max_length,
            "max_persona_tokens": self.max_persona_tokens,
            "specials": list(self.specials),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config(), "tokenizer_json": self.backend.to_str()}

    def load_state_dict(self, state: dict[str, Any]) -> HFTokenizer:
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_str(state["tokenizer_json"])
        self._set_ids()
        self.fitted = True
        return self

    def fingerprint(self) -> str:
        return hashlib.sha256(self.backend.to_str().encode()).hexdigest()[:16]

    def to_transformers(self) -> Any:
        """A `PreTrainedTokenizerFast` with the same vocabulary and specials (for save_pretrained)."""
        from tokenizers import Tokenizer
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer.from_str(self.backend.to_str()),
            bos_token=self.bos_token,
            eos_token=self.eot_token,
            pad_token=self.pad_token,
            additional_special_tokens=[self.persona_token, self.user_token, self.bot_token],
        )
