"""Byte-level BPE (or a pretrained Hugging Face tokenizer) and the causal-LM example layout.

One example is one sequence:

    <persona> persona text  <user> turn <eot>  <bot> turn <eot> ... <user> turn <eot>  <bot> reply <eot>
    └─────── persona ──────┘└───────────────── history (left-truncated) ─────────────┘└──── reply ────┘

- The speakers alternate backwards from the reply: the turn just before the reply is `<user>`,
  the one before that `<bot>`, and so on, so the labels do not depend on the history length.
- `token_type_ids` of every token is the marker of its segment (`<persona>`, `<user>` or `<bot>`;
  `<pad>` for padding): GPT-2 adds the embedding of that marker to the token's, as in
  TransferTransfo. The reply, its `<eot>` and the tokens generated after `<bot>` are `<bot>`.
- The reply is kept whole (or filtered / cut by `length_policy`), the persona gets up to
  `max_persona_tokens`, and the history fills what is left of the token budget, dropping its
  oldest tokens first (a cut turn keeps its speaker marker).
- Labels are -100 everywhere except the reply tokens and its `<eot>`: loss on the reply only.
- `<eot>` ends every turn and is the model's `eos_token_id` (generation stops there);
  `<pad>` is a separate token (pad != eos), and `<|endoftext|>` is the bos token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from dialoglab.data.dialogue import Example
from dialoglab.data.encoded import EncodedPairs
from dialoglab.data.tokenization import WordTokenizer
from dialoglab.errors import CheckpointError, ConfigError
from dialoglab.hf_hub import load_pretrained

IGNORE_INDEX = -100
_WORDS = WordTokenizer()  # the word count behind ppl_word is the same for every model family


def count_words(text: str) -> int:
    return _WORDS.count_words(text)


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group item indices into bins whose summed lengths stay within `capacity` (items never split)."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: (-lengths[k], k)):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    return [sorted(b) for b in bins]


class HFTokenizer:
    """Hugging Face `tokenizers` BPE + the causal-LM layout (see the module docstring).

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
        if budget < 1:
            raise ValueError(f"prompt budget must be >= 1, got {budget}")

        def ids_of(text: str) -> list[int]:
            return encoded[text] if encoded is not None and text in encoded else self.encode(text)

        persona_part: list[int] = []
        text = self.persona_text(persona)
        room = min(self.max_persona_tokens, budget - 1)
        if text and room >= 2:
            persona_part = [self.persona_id, *ids_of(text)[: room - 1]]
        history: list[int] = []
        owner: list[int] = []  # speaker marker of each history token
        n = len(context)
        for k, turn in enumerate(context):
            speaker = self.user_id if (n - 1 - k) % 2 == 0 else self.bot_id
            segment = [speaker, *ids_of(turn), self.eos_id]
            history.extend(segment)
            owner.extend([speaker] * len(segment))
        room = budget - 1 - len(persona_part)
        if len(history) > room:
            cut = len(history) - max(room, 0)
            history, owner = history[cut:], owner[cut:]
            if history and history[0] == self.eos_id:  # only the end of a turn was left
                history, owner = history[1:], owner[1:]
            if history and history[0] not in self.markers:
                history[0] = owner[0]  # a cut turn keeps its speaker marker
        return [*persona_part, *history, self.bot_id]

    def token_types(self, ids: Sequence[int]) -> list[int]:
        """Each token's segment marker (the last marker at or before it); padding is `<pad>`."""
        types = []
        current = self.bot_id
        for i in ids:
            if i in self.markers:
                current = i
            types.append(self.pad_id if i == self.pad_id else current)
        return types

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
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        types = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        for row, prompt in enumerate(prompts):
            if prompt:
                ids[row, width - len(prompt) :] = torch.tensor(prompt)
                mask[row, width - len(prompt) :] = 1
                types[row, width - len(prompt) :] = torch.tensor(self.token_types(prompt))
        return {"prompt_ids": ids, "prompt_mask": mask, "prompt_types": types}

    def collate(self, split: EncodedPairs, indices: list[int]) -> dict[str, torch.Tensor]:
        """A batch for `CausalLMModule`.

        Row tensors (one row per example, or per pack of examples when `pack_to` is set):
        input_ids, token_type_ids, labels (-100 outside replies), and attention_mask (right
        padding) or, when packing, position_ids restarting at 0 for each example (padding
        tokens: position 0, label -100). Example
        tensors: prompt_ids / prompt_mask / prompt_types (left-padded, for generation),
        reply_ids (reply + `<eot>`, right-padded), n_words, index.
        """
        prompts = [split.source(i).tolist() for i in indices]
        replies = [split.target(i).tolist() for i in indices]
        lengths = [len(p) + len(r) for p, r in zip(prompts, replies, strict=True)]
        if self.pack_to:
            rows = first_fit_decreasing(lengths, max(self.pack_to, *lengths))
        else:
            rows = [[k] for k in range(len(indices))]
        width = max(sum(lengths[k] for k in row) for row in rows)
        shape = (len(rows), width)
        input_ids = torch.full(shape, self.pad_id, dtype=torch.long)
        types = torch.full(shape, self.pad_id, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros(shape, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for k in row:
                seq = prompts[k] + replies[k]
                end = start + len(seq)
                input_ids[r, start:end] = torch.tensor(seq)
                types[r, start:end] = torch.tensor(self.token_types(seq))
                labels[r, start + len(prompts[k]) : end] = torch.tensor(replies[k])
                attention_mask[r, start:end] = 1
                position_ids[r, start:end] = torch.arange(len(seq))
                start = end
            if self.pack_to:
                # Padding of a packed row: position 0 makes each pad its own one-token segment,
                # and `<eot>` instead of `<pad>` spares transformers' "pass an attention_mask"
                # warning (packed rows have none: positions tell the examples apart).
                input_ids[r, start:] = self.eos_id
        reply_ids = torch.full(
            (len(indices), max(map(len, replies))), self.pad_id, dtype=torch.long
        )
        for k, reply in enumerate(replies):
            reply_ids[k, : len(reply)] = torch.tensor(reply)
        batch = {"input_ids": input_ids, "token_type_ids": types, "labels": labels}
        if self.pack_to:
            batch["position_ids"] = position_ids
        else:
            batch["attention_mask"] = attention_mask
        batch.update(self.left_pad(prompts))
        batch["reply_ids"] = reply_ids
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
