"""One decoding config for every model family, and our own search over the GRU-attention decoder.

`DecodingConfig` (built from `conf/decoding/*.yaml`) is what eval, the CLI, the web app and the
HTTP API pass around. For Hugging Face models it becomes `generate()` keyword arguments through
`to_hf_generate_kwargs`; for `GRUAttnSeq2Seq`, and for GPT-2 through `GPT2Stepper`
(`models/components/gpt2_stepper.py`, its KV cache as the state), it drives `generate` below:
batched greedy, beam search and sampling that encode once, step the decoder with its state, stop
at `<eos>`, and never copy a value to the host per token (whether every sequence has finished is
checked every `check_every` steps, one sync each time).

Logit processors, applied in this order to the raw next-token logits (as Hugging Face does):
`repetition_penalty` (CTRL: a logit of a token already generated is divided by the penalty when
positive, multiplied when negative), `no_repeat_ngram_size` (a token that would repeat an n-gram
of the reply is banned), `block_context_ngram_size` (a token that would repeat an n-gram of the
source context is banned: the bot does not parrot the user), `min_length` (`<eos>` banned before
that many tokens). Sampling then applies `temperature`, `top_k` and `top_p`.

Lengths count generated tokens, `<eos>` included: `max_length=20` gives at most 19 words and
`<eos>`. Beam hypotheses are ranked by `sum log p / length ** length_penalty`; an example's search
ends when no live beam can still beat its `num_beams` finished ones (Hugging Face's
`early_stopping="never"`), or with `early_stopping=True` as soon as it has them.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn import functional as F

from dialoglab.errors import ConfigError

STRATEGIES = ("greedy", "beam", "sample")
# A finite "minus infinity" for banned tokens: softmax gives them 0 and a row where everything is
# banned stays finite (no NaN), and sums of a few of them do not overflow float32.
BANNED = -1.0e9


# -----------------------------------------------------------------------------
# Config


@dataclass
class DecodingConfig:
    """How replies are decoded; the same fields for every model family and front end.

    `max_length=None` means the model's own default (`model.max_reply_length` for seq2seq).
    """

    strategy: str = "greedy"  # greedy | beam | sample
    max_length: int | None = None  # generated tokens incl. <eos>; None: the model's default
    min_length: int = 0  # tokens before <eos> is allowed
    num_beams: int = 5  # beam only; 1 is greedy
    length_penalty: float = 1.0  # beam only: score / length ** length_penalty
    early_stopping: bool = False  # beam only: stop at num_beams finished (else: when none can win)
    temperature: float = 1.0  # sample only
    top_k: int = 0  # sample only; 0 = off
    top_p: float = 1.0  # sample only; 1.0 = off
    no_repeat_ngram_size: int = 0  # 0 = off
    repetition_penalty: float = 1.0  # 1.0 = off
    block_context_ngram_size: int = 0  # 0 = off: n-grams of the context may be repeated
    seed: int | None = None  # sample only: the same seed and input give the same reply
    check_every: int = 8  # steps between checks that every sequence has finished (host syncs)

    def __post_init__(self) -> None:
        def fail(key: str, rule: str) -> None:
            raise ConfigError(f"decoding.{key} must be {rule}, got {getattr(self, key)!r}")

        if self.strategy not in STRATEGIES:
            fail("strategy", f"one of {', '.join(STRATEGIES)}")
        if self.max_length is not None and (not _is_int(self.max_length) or self.max_length < 1):
            fail("max_length", "an integer >= 1 or null")
        for key, low in (
            ("min_length", 0),
            ("num_beams", 1),
            ("top_k", 0),
            ("no_repeat_ngram_size", 0),
            ("block_context_ngram_size", 0),
            ("check_every", 1),
        ):
            if not _is_int(getattr(self, key)) or getattr(self, key) < low:
                fail(key, f"an integer >= {low}")
        for key in ("length_penalty", "temperature", "top_p", "repetition_penalty"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                fail(key, "a number")
            setattr(self, key, float(value))
        if self.temperature <= 0:
            fail("temperature", "> 0 (use strategy=greedy for argmax decoding)")
        if not 0.0 < self.top_p <= 1.0:
            fail("top_p", "in (0, 1]")
        if self.repetition_penalty <= 0:
            fail("repetition_penalty", "> 0 (1.0 is off)")
        if not isinstance(self.early_stopping, bool):
            fail("early_stopping", "true or false")
        if self.seed is not None and not _is_int(self.seed):
            fail("seed", "an integer or null")
        if self.max_length is not None and self.min_length >= self.max_length:
            fail("min_length", f"< max_length={self.max_length}")

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def from_any(cls, value: Any = None, **overrides: Any) -> DecodingConfig:
        """A config from None (greedy), a preset name ("beam"), a dict/DictConfig, or a config.

        A preset name reads `conf/decoding/<name>.yaml`; `overrides` replace fields after that.
        """
        if value is None:
            config = cls()
        elif isinstance(value, DecodingConfig):
            config = dataclasses.replace(value)
        elif isinstance(value, str):
            config = cls.from_any(load_preset(value))
        else:
            values = _to_plain_dict(value)
            values.pop("_target_", None)
            _check_keys(values)
            config = cls(**values)
        return config.replace(**overrides) if overrides else config

    def replace(self, **changes: Any) -> DecodingConfig:
        """A copy with some fields changed (validated again)."""
        _check_keys(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resolved_max_length(self, default: int) -> int:
        return self.max_length if self.max_length is not None else default

    @property
    def effective_strategy(self) -> str:
        """`beam` with one beam is greedy (as in Hugging Face)."""
        if self.strategy == "beam" and self.num_beams == 1:
            return "greedy"
        return self.strategy


def _check_keys(values: Mapping[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(DecodingConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown decoding setting(s) {', '.join('decoding.' + k for k in unknown)}; "
            f"accepted: {', '.join(sorted(known))}"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _to_plain_dict(value: Any) -> dict[str, Any]:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(value, DictConfig):
            return dict(OmegaConf.to_container(value, resolve=True))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(value, Mapping):
        return dict(value)
    raise ConfigError(
        f"decoding must be a preset name, a mapping or a DecodingConfig, got {type(value).__name__}"
    )


def preset_names() -> list[str]:
    """The presets in conf/decoding/ (greedy, beam, sample, nucleus, ...)."""
    from dialoglab.experiment.runner import CONFIG_DIR

    return sorted(p.stem for p in (CONFIG_DIR / "decoding").glob("*.yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The fields of conf/decoding/<name>.yaml as a plain dict."""
    import yaml

    from dialoglab.experiment.runner import CONFIG_DIR

    path = CONFIG_DIR / "decoding" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"decoding={name}: no such preset; choose one of {', '.join(preset_names())}"
        )
    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    merged: dict[str, Any] = {}
    for parent in values.pop("defaults", None) or []:  # e.g. nucleus.yaml: defaults: [sample]
        if parent != "_self_":
            merged.update(load_preset(str(parent)))
    merged.update(values)
    return merged


# -----------------------------------------------------------------------------
# Hugging Face


def to_hf_generate_kwargs(
    config: DecodingConfig,
    *,
    default_max_length: int | None = None,
    is_encoder_decoder: bool = False,
    prompt_length: int | None = None,
    ignore_ids: Sequence[int] = (),
) -> dict[str, Any]:
    """Keyword arguments for a Hugging Face `model.generate(...)` that decode like `config`.

    The caller adds `input_ids`, `attention_mask`, `pad_token_id` and `eos_token_id`. Sampling
    with a seed: wrap the call in `seeded(config)`. `block_context_ngram_size` becomes
    `encoder_no_repeat_ngram_size` for encoder-decoder models; for decoder-only models it needs
    `prompt_length` (the padded prompt width) and becomes a logits processor banning n-grams of
    `input_ids[:, :prompt_length]` (tokens in `ignore_ids`, e.g. padding, start no n-gram).
    """
    kwargs: dict[str, Any] = {"do_sample": False, "num_beams": 1}
    max_length = config.max_length if config.max_length is not None else default_max_length
    if max_length is not None:
        kwargs["max_new_tokens"] = max_length
    if config.min_length:
        kwargs["min_new_tokens"] = config.min_length
    strategy = config.effective_strategy
    if strategy == "beam":
        kwargs.update(
            num_beams=config.num_beams,
            length_penalty=config.length_penalty,
            early_stopping=True if config.early_stopping else "never",  # the same search as ours
            num_return_sequences=1,
        )
    elif strategy == "sample":
        kwargs.update(
            do_sample=True, temperature=config.temperature, top_k=config.top_k, top_p=config.top_p
        )
    if config.no_repeat_ngram_size:
        kwargs["no_repeat_ngram_size"] = config.no_repeat_ngram_size
    if config.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = config.repetition_penalty
    if config.block_context_ngram_size:
        if is_encoder_decoder:
            kwargs["encoder_no_repeat_ngram_size"] = config.block_context_ngram_size
        elif prompt_length is not None:
            kwargs["logits_processor"] = [
                PromptNGramBlocker(config.block_context_ngram_size, prompt_length, ignore_ids)
            ]
    return kwargs


class PromptNGramBlocker:
    """Hugging Face logits processor: ban tokens that repeat an n-gram of the prompt.

    `input_ids[:, :prompt_length]` is the prompt (context), the rest the reply so far; only the
    reply's last n-1 tokens are matched, so an n-gram spanning prompt and reply is not banned.
    """

    def __init__(self, n: int, prompt_length: int, ignore_ids: Sequence[int] = ()) -> None:
        self.n = n
        self.prompt_length = prompt_length
        self.ignore_ids = tuple(ignore_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        context = input_ids[:, : self.prompt_length]
        history = input_ids[:, self.prompt_length :]
        valid = _not_ignored(context, self.ignore_ids)
        banned = context_ngram_bans(history, context, valid, self.n, scores.size(-1))
        return scores.masked_fill(banned, float("-inf"))


@contextlib.contextmanager
def seeded(config: DecodingConfig) -> Iterator[None]:
    """Run the body with the global torch RNG seeded by `config.seed` (restored afterwards)."""
    if config.seed is None or config.effective_strategy != "sample":
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        yield


# -----------------------------------------------------------------------------
# Logit processors (tensors only: no host syncs)


def _not_ignored(ids: torch.Tensor, ignore_ids: Sequence[int]) -> torch.Tensor:
    valid = torch.ones_like(ids, dtype=torch.bool)
    for i in ignore_ids:
        valid &= ids != i
    return valid


def ngram_bans(history: torch.Tensor, n: int, vocab_size: int) -> torch.Tensor:
    """(N, V) True where the next token would repeat an n-gram already in `history` (N, t)."""
    N, t = history.shape
    banned = torch.zeros(N, vocab_size, dtype=torch.bool, device=history.device)
    if n < 1 or t < n:
        return banned
    windows = history.unfold(1, n, 1)  # (N, t - n + 1, n)
    prefix = history[:, t - n + 1 :]  # (N, n - 1): the last n-1 tokens
    match = (windows[:, :, : n - 1] == prefix.unsqueeze(1)).all(dim=-1)  # (N, W)
    return _scatter_bans(banned, windows[:, :, n - 1], match)


def context_ngram_bans(
    history: torch.Tensor, context: torch.Tensor, valid: torch.Tensor, n: int, vocab_size: int
) -> torch.Tensor:
    """(N, V) True where the next token would repeat an n-gram of `context` (N, S).

    `valid` (N, S) is False on padding and special tokens: no banned n-gram contains them.
    """
    N, t = history.shape
    banned = torch.zeros(N, vocab_size, dtype=torch.bool, device=history.device)
    if n < 1 or t < n - 1 or context.size(1) < n:
        return banned
    windows = context.unfold(1, n, 1)  # (N, W, n)
    ok = valid.unfold(1, n, 1).all(dim=-1)  # (N, W)
    if n > 1:
        prefix = history[:, t - n + 1 :]  # (N, n - 1)
        ok = ok & (windows[:, :, : n - 1] == prefix.unsqueeze(1)).all(dim=-1)
    return _scatter_bans(banned, windows[:, :, n - 1], ok)


def _scatter_bans(banned: torch.Tensor, tokens: torch.Tensor, match: torch.Tensor) -> torch.Tensor:
    # scatter_add counts, so a token named by a matching and a non-matching window stays banned.
    counts = torch.zeros(banned.shape, dtype=torch.int32, device=banned.device)
    counts.scatter_add_(1, tokens, match.int())
    return banned | (counts > 0)


def apply_repetition_penalty(
    logits: torch.Tensor, seen: torch.Tensor, penalty: float
) -> torch.Tensor:
    """CTRL repetition penalty on the tokens marked in `seen` (N, V)."""
    penalised = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen, penalised, logits)


def top_k_top_p_filter(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Keep the k most likely tokens and the smallest set holding probability top_p."""
    if top_k > 0 and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already hold top_p; the first always stays.
        drop_sorted = (cumulative - sorted_logits.softmax(dim=-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@dataclass
class _Processors:
    """The logit processors of one decoding run, over N = batch x beams rows."""

    config: DecodingConfig
    vocab_size: int
    eos_id: int
    context: torch.Tensor  # (N, S)
    context_valid: torch.Tensor  # (N, S)
    never_ids: tuple[int, ...] = ()  # tokens no reply contains (<pad>, <sos>)
    blocked_masks: dict[bool, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def __call__(
        self, logits: torch.Tensor, history: torch.Tensor, seen: torch.Tensor | None
    ) -> torch.Tensor:
        config, step = self.config, history.size(1)
        if seen is not None and config.repetition_penalty != 1.0:
            logits = apply_repetition_penalty(logits, seen, config.repetition_penalty)
        banned = None
        if config.no_repeat_ngram_size:
            banned = ngram_bans(history, config.no_repeat_ngram_size, self.vocab_size)
        if config.block_context_ngram_size:
            ctx = context_ngram_bans(
                history,
                self.context,
                self.context_valid,
                config.block_context_ngram_size,
                self.vocab_size,
            )
            banned = ctx if banned is None else banned | ctx
        if banned is not None:
            logits = logits.masked_fill(banned, BANNED)
        # <pad> and <sos> never belong in a reply; <eos> waits for min_length.
        blocked = self._blocked(step < config.min_length, logits.device)
        return logits if blocked is None else logits.masked_fill(blocked, BANNED)

    def _blocked(self, before_min_length: bool, device: torch.device) -> torch.Tensor | None:
        """(V,) bool mask of the always-blocked ids (+ <eos> before min_length), built once."""
        ids = (*self.never_ids, self.eos_id) if before_min_length else self.never_ids
        if not ids:
            return None
        cache = self.blocked_masks
        if before_min_length not in cache:
            mask = torch.zeros(self.vocab_size, dtype=torch.bool, device=device)
            mask[list(ids)] = True
            cache[before_min_length] = mask
        return cache[before_min_length]


# -----------------------------------------------------------------------------
# Search over a network that encodes once and steps a decoder: `GRUAttnSeq2Seq`, `GPT2Stepper`


def generate(
    net: Any,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    config: DecodingConfig | None = None,
    *,
    default_max_length: int = 20,
    ignore_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Replies (B, L) of a `GRUAttnSeq2Seq` (or a `GPT2Stepper`), `<pad>` after each `<eos>`;
    L <= max_length.

    `net` has `config` (pad_id, sos_id, eos_id, vocab_size), `encode(src, src_lengths) ->
    (memory, state, src_mask)` and `decoder(token, state, memory, src_mask) -> (logits, state,
    _)`; every tensor of the state (a tuple, nested or not) has the batch on dim 1, the memory on
    dim 0. The first token fed is `sos_id`.
    `ignore_ids` are tokens besides pad/sos/eos that start no context n-gram (e.g. `<sep>`,
    `<unk>`). Call `net.eval()` first if dropout should be off.
    """
    config = config or DecodingConfig()
    max_length = config.resolved_max_length(default_max_length)
    strategy = config.effective_strategy
    with torch.no_grad():
        if strategy == "beam":
            return beam_search(net, src, src_lengths, config, max_length, ignore_ids)
        return greedy_or_sample(net, src, src_lengths, config, max_length, ignore_ids)


def _special_ids(net: Any, ignore_ids: Sequence[int]) -> tuple[int, ...]:
    c = net.config
    return (c.pad_id, c.sos_id, c.eos_id, *ignore_ids)


def _repeat_state(state: Any, k: int) -> Any:
    if isinstance(state, tuple):
        return tuple(_repeat_state(s, k) for s in state)
    return state.repeat_interleave(k, dim=1)  # (L, B*k, H)


def _select_state(state: Any, index: torch.Tensor) -> Any:
    if isinstance(state, tuple):
        return tuple(_select_state(s, index) for s in state)
    return state.index_select(1, index)


def _trim(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Cut (B, L) tokens to the longest reply (one host sync)."""
    if tokens.size(1) == 0:
        return tokens
    is_eos = tokens == eos_id
    lengths = torch.where(is_eos.any(dim=1), is_eos.int().argmax(dim=1) + 1, tokens.size(1))
    return tokens[:, : int(lengths.max())]


def greedy_or_sample(
    net: Any,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    config: DecodingConfig,
    max_length: int,
    ignore_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Batched greedy (argmax) or sampled decoding with the logit processors; (B, L) tokens."""
    B = src.size(0)
    device = src.device
    pad_id, sos_id, eos_id = net.config.pad_id, net.config.sos_id, net.config.eos_id
    V = net.config.vocab_size
    sample = config.effective_strategy == "sample"
    generator = None
    if sample and config.seed is not None:
        generator = torch.Generator(device=device).manual_seed(config.seed)

    encoder_outputs, state, src_mask = net.encode(src, src_lengths)
    processors = _Processors(
        config,
        V,
        eos_id,
        src,
        src_mask & _not_ignored(src, _special_ids(net, ignore_ids)),
        (pad_id, sos_id),
    )
    track_seen = config.repetition_penalty != 1.0
    seen = torch.zeros(B, V, dtype=torch.bool, device=device) if track_seen else None
    token = torch.full((B, 1), sos_id, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    history = torch.empty(B, 0, dtype=torch.long, device=device)
    for step in range(max_length):
        logits, state, _ = net.decoder(token, state, encoder_outputs, src_mask)
        logits = processors(logits[:, -1].float(), history, seen)  # (B, V)
        if sample:
            logits = top_k_top_p_filter(logits / config.temperature, config.top_k, config.top_p)
            probs = logits.softmax(dim=-1)
            next_token = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            next_token = logits.argmax(dim=-1)  # (B,)
        next_token = next_token.masked_fill(finished, pad_id)
        history = torch.cat([history, next_token.unsqueeze(1)], dim=1)
        if seen is not None:
            seen.scatter_(1, next_token.unsqueeze(1), True)
        finished = finished | (next_token == eos_id)
        token = next_token.unsqueeze(1)
        if (step + 1) % config.check_every == 0 and bool(finished.all()):
            break
    return _trim(history, eos_id)


def beam_search(
    net: Any,
    src: torch.Tensor,
    src_lengths: torch.Tensor,
    config: DecodingConfig,
    max_length: int,
    ignore_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Batched beam search; returns the best finished hypothesis per example, (B, L) tokens.

    Each step the K live beams of an example propose their 2K best continuations; those ending in
    `<eos>` among the first K go to the example's pool of K finished hypotheses (ranked by
    `score / length ** length_penalty`), the K best others live on. An example is done when its
    pool is full and no live beam can still beat the pool's worst entry (with
    `config.early_stopping`: as soon as its pool is full, which then takes no more entries); at
    `max_length` the live beams of examples not done join the pool. This is Hugging Face's beam
    search (`early_stopping="never"`, or `True`), except that banned tokens are removed before
    the log-softmax, so scores stay normalised over the tokens that may follow. Everything stays
    on the device except one check every `check_every` steps and the final trim.
    """
    B, K = src.size(0), config.num_beams
    device = src.device
    pad_id, sos_id, eos_id = net.config.pad_id, net.config.sos_id, net.config.eos_id
    V = net.config.vocab_size
    N = B * K
    lp = config.length_penalty

    encoder_outputs, state, src_mask = net.encode(src, src_lengths)
    valid = src_mask & _not_ignored(src, _special_ids(net, ignore_ids))
    encoder_outputs = encoder_outputs.repeat_interleave(K, dim=0)  # (N, S, H)
    src_mask = src_mask.repeat_interleave(K, dim=0)
    state = _repeat_state(state, K)
    processors = _Processors(
        config,
        V,
        eos_id,
        src.repeat_interleave(K, dim=0),
        valid.repeat_interleave(K, dim=0),
        (pad_id, sos_id),
    )
    track_seen = config.repetition_penalty != 1.0
    seen = torch.zeros(N, V, dtype=torch.bool, device=device) if track_seen else None

    # Only the first beam is live at the start, so the K beams do not all pick the same token.
    scores = torch.full((B, K), BANNED, device=device)
    scores[:, 0] = 0.0
    history = torch.empty(N, 0, dtype=torch.long, device=device)
    token = torch.full((N, 1), sos_id, dtype=torch.long, device=device)
    pool_scores = torch.full((B, K), float("-inf"), device=device)
    pool_tokens = torch.full((B, K, max_length), pad_id, dtype=torch.long, device=device)
    base = (torch.arange(B, device=device) * K).unsqueeze(1)  # (B, 1)
    rank = torch.arange(2 * K, device=device).unsqueeze(0)  # (1, 2K)
    closed = torch.zeros(B, 1, dtype=torch.bool, device=device)  # early stopping: pool final

    def join_pool(
        cand_scores: torch.Tensor, cand_tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Merge (B, C) normalised scores and (B, C, max_length) tokens into the pool."""
        all_scores = torch.cat([pool_scores, cand_scores], dim=1)
        all_tokens = torch.cat([pool_tokens, cand_tokens], dim=1)
        best, index = torch.topk(all_scores, K, dim=1)
        picked = all_tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, max_length))
        return best, picked

    def padded(rows: torch.Tensor) -> torch.Tensor:
        """(..., t) tokens padded with <pad> to (..., max_length)."""
        missing = max_length - rows.size(-1)
        return F.pad(rows, (0, missing), value=pad_id) if missing > 0 else rows

    for step in range(max_length):
        logits, state, _ = net.decoder(token, state, encoder_outputs, src_mask)
        logits = processors(logits[:, -1].float(), history, seen)  # (N, V)
        logprobs = logits.log_softmax(dim=-1)
        total = (scores.view(N, 1) + logprobs).view(B, K * V)
        cand_scores, cand_index = torch.topk(total, 2 * K, dim=1)  # (B, 2K)
        cand_beam = cand_index // V  # parent beam in 0..K-1
        cand_token = cand_index % V
        parent = (base + cand_beam).view(-1)  # (B*2K,) rows of history

        # Finished: <eos> among the first K candidates.
        is_eos = cand_token == eos_id
        length = step + 1
        not_finished = ~is_eos | (rank >= K) | closed
        finished_scores = (cand_scores / length**lp).masked_fill(not_finished, -torch.inf)
        finished_tokens = torch.cat(
            [history.index_select(0, parent).view(B, 2 * K, step), cand_token.unsqueeze(-1)],
            dim=-1,
        )
        pool_scores, pool_tokens = join_pool(finished_scores, padded(finished_tokens))
        if config.early_stopping:
            closed = pool_scores[:, -1:] > -torch.inf

        # Live on: the K best candidates that are not <eos> (there are always K of them).
        live_scores, live_pick = torch.topk(cand_scores.masked_fill(is_eos, -torch.inf), K, dim=1)
        live_beam = (base + cand_beam.gather(1, live_pick)).view(-1)  # (N,)
        live_token = cand_token.gather(1, live_pick).view(N, 1)
        scores = live_scores
        history = torch.cat([history.index_select(0, live_beam), live_token], dim=1)
        state = _select_state(state, live_beam)
        if seen is not None:
            seen = seen.index_select(0, live_beam).scatter_(1, live_token, True)
        token = live_token

        if (step + 1) % config.check_every == 0 and step + 1 < max_length:
            # Best score a live beam could still reach: log-probs only fall as it grows, and
            # with length_penalty > 0 the longest length divides most.
            bound_length = max_length if lp > 0 else step + 1
            bound = scores[:, 0] / bound_length**lp
            done = (pool_scores[:, -1] > -torch.inf) & (bound <= pool_scores[:, -1])
            if bool((done | closed[:, 0]).all()):
                break

    # Live beams that reached the end (or the early stop) join the pool, unless it is closed.
    length = history.size(1)
    live_normalised = (scores / max(length, 1) ** lp).masked_fill(closed, -torch.inf)
    pool_scores, pool_tokens = join_pool(live_normalised, padded(history.view(B, K, length)))
    return _trim(pool_tokens[:, 0], eos_id)
