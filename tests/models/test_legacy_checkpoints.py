"""Checkpoints written before the models were made plain (project issue #26) still load and reply
word for word as they did.

tests/fixtures/legacy/ holds two tiny models trained on synthetic persona data by that code:
gru_attn (hidden 16, 1+1 layers; its network settings at the top of `model`, with the retired
`fused_rnn` switch) and a GPT-2 from scratch (with the retired `fast_dropout` and `search`). The
expected replies are what the old code answered.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from dialoglab import accel
from dialoglab.experiment.checkpoint import restore_model
from dialoglab.models.components.gru_attn import GRUAttnSeq2Seq
from tests.conftest import run_script
from tests.helpers.synthetic_persona import write_persona_jsonl

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"
GRU_ATTN, GPT2 = LEGACY / "gru_attn.ckpt", LEGACY / "gpt2_scratch.ckpt"
GREEDY_8 = {"strategy": "greedy", "max_length": 8}
GRU_CONTEXTS = [["what do you do?"], ["where do you live?"]]
GRU_REPLIES = [
    "in kyoto kyoto keeps kyoto keeps kyoto keeps",
    "in kyoto kyoto second second second second second",
]


def test_gru_attn_checkpoint_loads_into_the_plain_network() -> None:
    restored = restore_model(GRU_ATTN)
    model = restored.model
    assert type(model.net) is GRUAttnSeq2Seq
    config = model.net.config
    assert (config.vocab_size, config.hidden_size) == (80, 16)
    assert (config.encoder_n_layers, config.decoder_n_layers) == (1, 1)
    # the old flat network settings now sit under model.net; the retired switch is gone
    assert restored.cfg.model.net.hidden_size == 16
    assert "fused_rnn" not in restored.cfg.model and "hidden_size" not in restored.cfg.model
    # every stored weight went into the model (restore_model loads strictly)
    stored = restored.checkpoint["state_dict"]
    assert set(stored) == set(model.state_dict())
    for name, value in model.state_dict().items():
        assert torch.equal(value, stored[name]), name


def test_gru_attn_checkpoint_replies_as_before() -> None:
    model = restore_model(GRU_ATTN).model
    assert model.reply(GRU_CONTEXTS, decoding=GREEDY_8) == GRU_REPLIES
    model = accel.for_inference(model, "none")  # fp32 with the speed paths, as chat holds it
    assert model.inference_weights == "none"
    assert model.reply(GRU_CONTEXTS, decoding=GREEDY_8) == GRU_REPLIES


def test_gpt2_checkpoint_replies_as_before() -> None:
    restored = restore_model(GPT2)
    model = restored.model
    for retired in ("fast_dropout", "search"):
        assert retired not in restored.cfg.model
    batch = model.encode_prompts([["what do you do?"]], None)
    ids = model.generate_ids(
        batch["prompt_ids"], batch["prompt_mask"], batch["prompt_types"], GREEDY_8
    )
    assert ids.tolist() == [[159] * 8]


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint", [GRU_ATTN, GPT2], ids=["gru_attn", "gpt2"])
def test_eval_cli_scores_a_legacy_checkpoint_on_new_data(tmp_path: Path, checkpoint: Path) -> None:
    """`python eval.py ckpt_path=<old checkpoint> data.path=...`: the data it was trained on is
    gone, so it is scored on new synthetic persona data, as a user would point it."""
    data = write_persona_jsonl(tmp_path / "data" / "persona.jsonl", n_lines=60, n_personas=6)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = run_script(
        "eval.py",
        f"ckpt_path={checkpoint}",
        f"data.path={data}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "trainer.accelerator=cpu",
        "trainer.limit_test_batches=1",
        cwd=tmp_path,
        env=env,
        merge_stderr=True,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Traceback" not in result.stdout
    (metrics_file,) = (tmp_path / "outputs" / "eval" / "runs").glob("*/metrics.json")
    saved = json.loads(metrics_file.read_text())
    assert saved["ckpt_path"] == str(checkpoint) and saved["split"] == "test"
    for name in ("test/loss", "test/ppl", "test/bleu", "test/distinct_1"):
        assert name in saved["metrics"], name
    assert saved["metrics"]["test/ppl"] > 1 and all(s["reply"] for s in saved["samples"])
    assert (tmp_path / "cache").is_dir()  # the processed data went where it was told
