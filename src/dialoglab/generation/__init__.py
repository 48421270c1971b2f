"""One decoding config for every model family, and our own search over step-wise decoders.

`DecodingConfig` (built from `conf/decoding/*.yaml`) is what eval, the CLI, the web app and the
HTTP API pass around. For Hugging Face models it becomes `generate()` keyword arguments through
`to_hf_generate_kwargs` (`hf.py`: GPT-2); for `GRUAttnSeq2Seq` it drives `generate`
(`search.py`): batched greedy, beam search and sampling, and MMI reranking of beam replies (`mmi.py`).
`processors.py` holds the logit processors both paths share, `config.py` the config and its
presets. No reply holds `<unk>` unless `allow_unk` is set.
"""

from dialoglab.generation.config import (
    DEFAULT_PRESETS_DIR,
    STRATEGIES,
    DecodingConfig,
    load_preset,
    preset_names,
)
from dialoglab.generation.hf import TokenBan, seeded, to_hf_generate_kwargs
from dialoglab.generation.mmi import mmi_scores, unconditioned_logprob
from dialoglab.generation.processors import (
    BANNED,
    LogitProcessors,
    PromptNGramBlocker,
    apply_repetition_penalty,
    context_ngram_bans,
    ngram_bans,
    top_k_top_p_filter,
)
from dialoglab.generation.search import beam_search, generate, greedy_or_sample

__all__ = [
    "BANNED",
    "DEFAULT_PRESETS_DIR",
    "STRATEGIES",
    "DecodingConfig",
    "LogitProcessors",
    "PromptNGramBlocker",
    "TokenBan",
    "apply_repetition_penalty",
    "beam_search",
    "context_ngram_bans",
    "generate",
    "greedy_or_sample",
    "load_preset",
    "mmi_scores",
    "ngram_bans",
    "preset_names",
    "seeded",
    "to_hf_generate_kwargs",
    "top_k_top_p_filter",
    "unconditioned_logprob",
]
