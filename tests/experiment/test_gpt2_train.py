"""GPT-2 end to end: tiny models trained on Cornell, chatterbot and persona JSONL; fine-tuning from
a save_pretrained directory; checkpoint -> eval and export round trips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from dialoglab.experiment.checkpoint import restore_model
from dialoglab.experiment.evaluate import evaluate
from dialoglab.experiment.export import export
from dialoglab.experiment.train import train
from dialoglab.models.causal_lm import CausalLMModule
from tests.conftest import QUIET_CPU_RUN, TINY_GRU
from tests.helpers.synthetic_persona import rows, write_persona_jsonl

TINY = [
    "model.n_layer=2",
    "model.n_head=2",
    "model.n_embd=32",
    "model.n_positions=96",
    "model.tokenizer.vocab_size=500",
    "model.tokenizer.max_length=64",
    "model.max_reply_length=8",
    "model.val_generate=16",
    *QUIET_CPU_RUN,
]
TINY_GPT2 = ["model=gpt2_scratch", *TINY]
METRICS = ("train/loss", "val/loss", "val/ppl", "val/ppl_word", "val/bleu", "val/distinct_2")


def persona_file(tmp_path: Path) -> Path:
    """Both accepted forms in one file, 12 personas."""
    path = write_persona_jsonl(tmp_path / "persona.jsonl", n_lines=96, n_personas=12)
    multi = [json.dumps(r) for r in rows(24, 6, turns=True, seed=1)]
    with path.open("a", encoding="utf-8") as f:
        f.write("\n".join(multi) + "\n")
    return path


def check(metrics: dict[str, float]) -> None:
    for name in (*METRICS, "test/ppl", "test/bleu", "val/ppl_best"):
        assert name in metrics, name
    assert 1.0 < metrics["val/ppl"] < 1e5 and metrics["val/ppl_word"] > 1.0


def test_scratch_on_cornell_slice(make_cfg, cornell_subset: Path) -> None:
    overrides = ["debug=fast", f"data.path={cornell_subset}", "data.context_turns=2", *TINY_GPT2]
    check(train(make_cfg("train", overrides)))


def test_scratch_on_chatterbot_in_bf16(make_cfg) -> None:
    overrides = ["debug=fast", "data=chatterbot", "trainer.precision=bf16-mixed", *TINY_GPT2]
    check(train(make_cfg("train", overrides)))


def test_scratch_on_persona_jsonl_with_packing(make_cfg, tmp_path: Path) -> None:
    path = persona_file(tmp_path)
    overrides = [
        "experiment=persona_gpt2",
        "debug=fast",
        f"data.path={path}",
        "model.tokenizer.pack_to=128",
        "model.gradient_checkpointing=true",
        *TINY,
    ]
    check(train(make_cfg("train", overrides)))
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    prompts = [s["prompt"] for s in summary["samples"]]
    personas = {p.split(") ")[0] for p in prompts if p.startswith("(")}
    assert len(personas) == 2, prompts  # replies as two held-out personas
    assert any(p.endswith("(no context)") for p in prompts)


def test_gru_attn_reads_persona_as_context(make_cfg, tmp_path: Path) -> None:
    """Seq2seq on persona data: the persona is prepended to the encoder input."""
    path = persona_file(tmp_path)
    metrics = train(
        make_cfg("train", ["debug=fast", "data=persona", f"data.path={path}", *TINY_GRU])
    )
    assert metrics["val/ppl"] > 1.0


def save_tiny_pretrained(folder: Path) -> Path:
    """What `save_pretrained` of a (here tiny, random) GPT-2 and its tokenizer leaves on disk."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([r["synthesized text"] for r in rows(200, 20)], trainer=trainer)
    eos = tok.token_to_id("<|endoftext|>")
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    config = GPT2Config(
        vocab_size=tok.get_vocab_size(),
        n_positions=96,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder


def test_finetune_from_a_local_pretrained_dir_then_eval_and_export(
    make_cfg, tmp_path: Path, monkeypatch
) -> None:
    pretrained = save_tiny_pretrained(tmp_path / "tiny-gpt2")
    data = persona_file(tmp_path)
    overrides = [
        "model=gpt2",
        f"model.pretrained={pretrained}",
        "data=persona",
        f"data.path={data}",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=3",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        *[o for o in TINY if not o.startswith(("model.n_", "model.tokenizer.vocab"))],
    ]
    train_metrics = train(make_cfg("train", overrides, output_dir=tmp_path / "train_run"))
    check(train_metrics)
    best = json.loads((tmp_path / "train_run" / "metrics.json").read_text())["best_checkpoint"]

    # Plain data: weights_only load; the pretrained directory is not needed any more.
    shutil.rmtree(pretrained)
    payload = torch.load(best, map_location="cpu", weights_only=True)["dialoglab"]
    assert payload["family"] == "causal_lm" and payload["tokenizer"]["tokenizer_json"]
    assert payload["init_kwargs"]["gpt2_config"]["n_embd"] == 32
    restored = restore_model(best).model
    assert isinstance(restored, CausalLMModule)
    assert restored.net.config.vocab_size == len(restored.tokenizer) > 400  # specials added
    # model=gpt2 runs the saved gelu_new as its fused form, and says so in the recorded config.
    assert restored.net.config.activation_function == "gelu_pytorch_tanh"

    eval_cfg = make_cfg(
        "eval", [f"ckpt_path={best}", "trainer.limit_test_batches=2"], output_dir=tmp_path / "ev"
    )
    eval_metrics = evaluate(eval_cfg)
    for name in ("test/loss", "test/ppl", "test/ppl_word", "test/bleu", "test/distinct_2"):
        assert eval_metrics[name] == pytest.approx(train_metrics[name], rel=1e-5, abs=1e-6), name
    # Replies come from Hugging Face generate() (the one GPT-2 decoding path).
    from transformers import GPT2LMHeadModel

    calls = []
    real = GPT2LMHeadModel.generate
    monkeypatch.setattr(
        GPT2LMHeadModel, "generate", lambda self, **kw: calls.append(1) or real(self, **kw)
    )
    again = evaluate(make_cfg("eval", [f"ckpt_path={best}", "trainer.limit_test_batches=2"]))
    assert calls, "GPT-2 replies must decode through generate()"
    assert again["test/bleu"] == pytest.approx(eval_metrics["test/bleu"], abs=1e-9)

    # Export: a Hugging Face directory with the same logits and the same token ids.
    out = tmp_path / "exported"
    export(make_cfg("export", [f"ckpt_path={best}", f"out={out}"], output_dir=tmp_path / "ex"))
    from transformers import AutoTokenizer, GPT2LMHeadModel

    hf_model = GPT2LMHeadModel.from_pretrained(out).eval()
    assert hf_model.config.activation_function == "gelu_pytorch_tanh"
    hf_tok = AutoTokenizer.from_pretrained(out)
    tok = restored.tokenizer
    assert hf_tok.pad_token_id == tok.pad_id and hf_tok.eos_token_id == tok.eos_id
    text = "if you visit oslo, ask me about chess."
    assert hf_tok(text, add_special_tokens=False).input_ids == tok.encode(text)
    batch = restored.encode_prompts([["hello!"]], ["A pilot who loves jazz."])
    ids, types = batch["prompt_ids"], batch["prompt_types"]
    with torch.no_grad():
        before = restored.net(input_ids=ids, token_type_ids=types).logits
        after = hf_model(input_ids=ids, token_type_ids=types).logits
    torch.testing.assert_close(after, before)
    assert hf_model.generation_config.eos_token_id == tok.eos_id


def test_export_refuses_a_seq2seq_checkpoint(make_cfg, tmp_path: Path) -> None:
    from dialoglab.errors import CheckpointError

    limits = ["trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "test=false"]
    overrides = ["data=chatterbot", "trainer.max_epochs=1", *limits, *TINY_GRU]
    cfg = make_cfg("train", overrides, output_dir=tmp_path / "gru")
    train(cfg)
    last = tmp_path / "gru" / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match="only GPT-2"):
        export(make_cfg("export", [f"ckpt_path={last}", f"out={tmp_path / 'x'}"]))
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="search"):  # the retired GPT-2 switch
        make_cfg("eval", [f"ckpt_path={last}", "search=hf"])
