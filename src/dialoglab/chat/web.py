"""`streamlit run app.py [-- OVERRIDES]`: a web chat with any checkpoint under outputs/.

    streamlit run app.py -- ckpt_path=best quantize=int8 decoding=beam paths.root_dir=/data/runs

The script's arguments are Hydra overrides of conf/chat.yaml (plus conf/paths/), composed by
`web_settings`; they only preselect what the sidebar shows, and a bad one is shown on the page.
Sidebar: the checkpoint (every `outputs/**/checkpoints/*.ckpt` under `paths.root_dir`, newest
first, or a typed path, `best` or `last`; `ckpt_path` preselects one), how the weights are held
(auto | none | int8 | bf16: `quantize`, default auto: int8 on the CPU), decoding controls (a
preset from conf/decoding/ and its fields; `decoding=...` preselects them), what the bot
remembers about you (with a button to forget it) and a button to start over. Each browser
session has its own history and memory. For gru_attn models, the attention of the last reply is
drawn as a heat-map (source words x reply words). The model is loaded once per checkpoint,
weights setting and process (`st.cache_resource`).

The project's `.streamlit/config.toml` binds the server to 127.0.0.1 and turns Streamlit's usage
statistics off; `--server.address=0.0.0.0` opens it to the network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from dialoglab.chat.bot import (
    DEFAULT_DECODING,
    DEFAULT_QUANTIZE,
    PRESETS_DIR,
    Attention,
    Chatbot,
    Session,
    decoding_config,
)
from dialoglab.chat.web_settings import WebSettings, web_settings
from dialoglab.errors import ConfigError, DialoglabError
from dialoglab.experiment.runner import find_checkpoints, resolve_ckpt_path
from dialoglab.generation import STRATEGIES, DecodingConfig, preset_names
from dialoglab.models.quantize import QUANTIZE_CHOICES

TITLE = "dialoglab chat"


def page_settings() -> WebSettings:
    """This browser session's settings, composed from the script's arguments on its first run."""
    if "web_settings" not in st.session_state:
        st.session_state.web_settings = web_settings()
    return st.session_state.web_settings


@st.cache_resource(show_spinner="Loading the model...", max_entries=4)
def load_bot(
    path: str,
    quantize: str = DEFAULT_QUANTIZE,
    device: str = "cpu",
    accel: dict[str, Any] | None = None,
) -> Chatbot:
    return Chatbot.from_checkpoint(path, quantize=quantize, device=device, accel=accel)


# -----------------------------------------------------------------------------
# Sidebar


def choose_checkpoint(settings: WebSettings) -> str | None:
    root = settings.root_dir
    options = [str(p) for p in find_checkpoints(root)]
    preselected = settings.ckpt_path
    if preselected:
        options = [preselected, *(o for o in options if o != preselected)]

    def label(path: str) -> str:
        try:
            return str(Path(path).relative_to(root / "outputs"))
        except ValueError:
            return path

    choice = None
    if options:
        choice = st.selectbox("Checkpoint", options, format_func=label, key="ckpt_choice")
    typed = st.text_input("...or a checkpoint path", key="ckpt_typed").strip()
    return typed or choice


WEIGHTS_LABELS = {
    "auto": "auto (int8 on the CPU)",
    "none": "fp32 (as trained)",
    "int8": "int8 (dynamic quantization)",
    "bf16": "bf16",
}


def choose_quantize(settings: WebSettings) -> str:
    """How the model holds its weights; the `quantize` setting preselects one."""
    return st.selectbox(
        "Weights",
        QUANTIZE_CHOICES,
        index=QUANTIZE_CHOICES.index(settings.quantize),
        format_func=lambda q: WEIGHTS_LABELS.get(q, q),
        key="quantize",
        help="int8: 1.5-4x faster replies on the CPU, nearly all as in fp32",
    )


def beam_controls(base: DecodingConfig, k: str) -> dict[str, Any]:
    """Widgets for beam search's fields (beams, length penalty, early stop, MMI reranking)."""
    values: dict[str, Any] = {}
    values["num_beams"] = st.slider("Beams", 1, 10, max(base.num_beams, 1), key=k + "beams")
    values["length_penalty"] = st.slider(
        "Length penalty", -1.0, 3.0, base.length_penalty, 0.1, key=k + "lp"
    )
    values["early_stopping"] = st.checkbox(
        "Stop at the first finished beams",
        base.early_stopping,
        key=k + "early",
        help="Shorter replies; off: search until no beam can beat the finished ones",
    )
    values["mmi_lambda"] = st.slider(
        "MMI lambda (0 = off)",
        0.0,
        1.0,
        min(base.mmi_lambda, 1.0),
        0.05,
        key=k + "mmi",
        help="Rerank finished beams against replies likely after any message (seq2seq)",
    )
    return values


def decoding_controls(bot: Chatbot, settings: WebSettings) -> DecodingConfig:
    """Widgets for a decoding preset and its fields (the `decoding` setting preselects them);
    returns the resulting config."""
    presets = preset_names(PRESETS_DIR)
    first = next((p for p in (settings.decoding_preset, DEFAULT_DECODING) if p in presets), None)
    preset = st.selectbox(
        "Decoding preset", presets, index=presets.index(first) if first is not None else 0
    )
    chosen = preset == settings.decoding_preset and settings.decoding
    base = decoding_config(settings.decoding if chosen else preset)
    k = f"dec_{preset}_"  # a new preset starts from its own values
    strategy = st.selectbox(
        "Strategy", STRATEGIES, index=STRATEGIES.index(base.strategy), key=k + "strategy"
    )
    default_max = base.max_length or int(getattr(bot.model, "max_reply_length", 20))
    values: dict[str, Any] = {"strategy": strategy}
    values["max_length"] = st.slider("Max length (tokens)", 2, 100, default_max, key=k + "max")
    values["min_length"] = st.slider(
        "Min length",
        0,
        values["max_length"] - 1,
        min(base.min_length, values["max_length"] - 1),
        key=k + "min",
    )
    if strategy == "beam":
        values.update(beam_controls(base, k))
    if strategy == "sample":
        values["temperature"] = st.slider(
            "Temperature", 0.05, 2.0, base.temperature, 0.05, key=k + "temp"
        )
        values["top_k"] = st.slider("Top-k (0 = off)", 0, 200, base.top_k, key=k + "topk")
        values["top_p"] = st.slider("Top-p", 0.05, 1.0, base.top_p, 0.05, key=k + "topp")
        seed = st.number_input("Seed (-1 = random)", -1, 2**31 - 1, -1, key=k + "seed")
        values["seed"] = None if seed < 0 else int(seed)
    values["no_repeat_ngram_size"] = st.slider(
        "No-repeat n-gram size (0 = off)", 0, 6, base.no_repeat_ngram_size, key=k + "nrng"
    )
    values["repetition_penalty"] = st.slider(
        "Repetition penalty", 1.0, 3.0, max(base.repetition_penalty, 1.0), 0.05, key=k + "rp"
    )
    values["block_context_ngram_size"] = st.slider(
        "Block n-grams of your message (0 = off)",
        0,
        6,
        base.block_context_ngram_size,
        key=k + "ctx",
    )
    try:
        return base.replace(**values)
    except DialoglabError as err:
        st.warning(f"{err}; using the preset as it is")
        return base


def memory_panel(session: Session) -> None:
    st.subheader("What I remember about you")
    memory = session.memory
    if memory.is_empty():
        st.caption('Nothing yet. Try "my name is ...", "I like ...", "I\'m from ...".')
    else:
        rows = {
            "name": memory.name or "",
            "from": memory.origin or "",
            "likes": ", ".join(memory.likes),
            "dislikes": ", ".join(memory.dislikes),
        }
        st.table([{"fact": k, "value": v} for k, v in rows.items() if v])
    col1, col2 = st.columns(2)
    if col1.button("Forget me", key="forget", disabled=memory.is_empty()):
        memory.forget()
        st.rerun()
    if col2.button("New chat", key="reset"):
        session.reset()
        st.session_state.messages = []
        st.rerun()


# -----------------------------------------------------------------------------
# Attention heat-map


def attention_figure(attention: Attention) -> Any:
    """Matplotlib figure: reply tokens (rows) x source tokens (columns)."""
    from matplotlib.figure import Figure

    rows, cols = len(attention.reply_tokens), len(attention.source_tokens)
    fig = Figure(
        figsize=(min(9.0, max(4.0, 0.4 * cols + 1.8)), min(7.0, max(2.6, 0.3 * rows + 1.4)))
    )
    ax = fig.add_subplot()
    image = ax.imshow(attention.weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(cols), attention.source_tokens, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(rows), attention.reply_tokens, fontsize=8)
    ax.set_xlabel("source (what the model read)")
    ax.set_ylabel("reply")
    fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    return fig


# -----------------------------------------------------------------------------
# Page


def open_bot(path: str | None, quantize: str, settings: WebSettings) -> Chatbot | None:
    """The bot of the chosen checkpoint (`best` / `last` resolved under the root's outputs/);
    None, with a message on the page, when there is none or it cannot be loaded."""
    if not path:
        st.title(TITLE)
        st.info(
            f"No checkpoint found under {settings.root_dir / 'outputs'}. Train one with "
            "`python train.py experiment=quickstart`, type a checkpoint path in the sidebar, or "
            "start the app with `streamlit run app.py -- paths.root_dir=DIR` (or ckpt_path=PATH)."
        )
        return None
    try:
        ckpt = resolve_ckpt_path(path, settings.root_dir)
        return load_bot(ckpt, quantize, settings.device, settings.accel)
    except DialoglabError as err:
        st.title(TITLE)
        st.error(str(err))
        return None


def current_session(bot: Chatbot) -> Session:
    """This browser session's conversation; a new one when the model changes."""
    state = st.session_state
    if state.get("ckpt") != bot.ckpt_path:
        state.ckpt = bot.ckpt_path
        state.session = bot.new_session()
        state.messages = []
    return state.session


def answer(bot: Chatbot, session: Session, prompt: str, decoding: DecodingConfig) -> None:
    """Reply to `prompt` and add both messages to the page's history."""
    reply = bot.reply(prompt, session, decoding=decoding, with_attention=bot.supports_attention)
    st.session_state.messages.append({"role": "user", "text": prompt})
    st.session_state.messages.append(
        {
            "role": "assistant",
            "text": reply.text,
            "source": reply.source,
            "notices": reply.notices,
            "learnt": reply.learnt,
            "attention": reply.attention,
        }
    )


def show_messages(messages: list[dict[str, Any]]) -> None:
    if not messages:
        st.caption("Type a message below. /help lists the commands.")
    for message in messages:
        with st.chat_message(message["role"]):
            st.markdown(message["text"].replace("<", "&lt;"))
            for notice in message.get("notices") or []:
                st.caption(f"note: {notice}")
            if message.get("learnt"):
                facts = "; ".join(
                    f"{k}: {', '.join(v) if isinstance(v, list) else v}"
                    for k, v in message["learnt"].items()
                )
                st.caption(f"remembered {facts}")
            if message.get("source") == "memory":
                st.caption("answered from memory")


def show_attention(bot: Chatbot, messages: list[dict[str, Any]]) -> None:
    last = next((m for m in reversed(messages) if m["role"] == "assistant"), None)
    if not bot.supports_attention:
        st.caption(f"No attention heat-map for {bot.family} models.")
    elif last is not None and last.get("attention") is not None and last["attention"].weights:
        st.markdown("**Attention of the last reply** (reply words x source words)")
        st.pyplot(attention_figure(last["attention"]), clear_figure=False)
    else:
        st.caption("The attention of the model's last reply will appear here.")


def main() -> None:
    st.set_page_config(page_title=TITLE, page_icon=":speech_balloon:", layout="wide")
    try:
        settings = page_settings()
    except ConfigError as err:
        st.title(TITLE)
        st.error(str(err).replace("\n", "  \n"))  # markdown: keep Hydra's line breaks
        return
    with st.sidebar:
        st.header(TITLE)
        path = choose_checkpoint(settings)
        quantize = choose_quantize(settings)
    bot = open_bot(path, quantize, settings)
    if bot is None:
        return
    session = current_session(bot)
    with st.sidebar:
        st.caption(
            f"{bot.family} model · reads the last {bot.window} turn(s) · "
            f"vocabulary {len(bot.model.tokenizer):,} · "
            f"{'fp32' if bot.weights == 'none' else bot.weights} weights"
        )
        with st.expander("Decoding", expanded=False):
            decoding = decoding_controls(bot, settings)

    # The message is answered before the page is drawn, so the memory panel is up to date.
    prompt = st.chat_input("Say something...")
    if prompt is not None:
        answer(bot, session, str(prompt), decoding)
    with st.sidebar:
        memory_panel(session)

    st.title(TITLE)
    chat_column, attention_column = st.columns([3, 2], gap="large")
    with chat_column:
        show_messages(st.session_state.messages)
    with attention_column:
        show_attention(bot, st.session_state.messages)
