"""Every config in conf/ composes, and its objects instantiate."""

from __future__ import annotations

from pathlib import Path

import hydra
import pytest
from omegaconf import DictConfig

from dialoglab.experiment.loggers import instantiate_callbacks, instantiate_loggers
from dialoglab.experiment.runner import CONFIG_DIR


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "group", ["data", "model", "trainer", "logger", "callbacks", "debug", "accel"]
)
def test_group_has_options(group: str) -> None:
    assert options(group), f"conf/{group} is empty"


@pytest.mark.parametrize(
    "override",
    [f"data={o}" for o in options("data")]
    + [f"model={o}" for o in options("model")]
    + [f"trainer={o}" for o in options("trainer")]
    + [f"logger={o}" for o in options("logger")]
    + [f"callbacks={o}" for o in options("callbacks")]
    + [f"experiment={o}" for o in options("experiment")]
    + [f"debug={o}" for o in options("debug")]
    + [f"accel={o}" for o in options("accel")],
)
def test_train_config_composes(make_cfg, override: str) -> None:
    cfg: DictConfig = make_cfg("train", [override])
    assert cfg.data._target_.endswith("DialogueDataModule")
    assert cfg.model._target_.startswith("dialoglab.models.")
    assert cfg.optimized_metric == "val/ppl_best"
    # Loggers and callbacks build from every option (W&B offline, no network).
    instantiate_loggers(cfg.get("logger"))
    instantiate_callbacks(cfg.get("callbacks"))
    if "gpu" not in override and "ddp" not in override:
        trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[])
        assert trainer.max_epochs == (1 if cfg.trainer.fast_dev_run else cfg.trainer.max_epochs)


@pytest.mark.parametrize("option", options("accel"))
def test_accel_options_name_every_switch(make_cfg, option: str) -> None:
    """accel=auto and accel=none set every speed path explicitly (saved with the run)."""
    from dialoglab.accel import AccelConfig

    cfg = make_cfg("train", [f"accel={option}"])
    settings = AccelConfig.from_any(cfg.accel)
    assert set(cfg.accel) == set(AccelConfig.__dataclass_fields__)
    assert any(vars(settings).values()) == (option == "auto")


def test_gru_attn_hyperparameters_live_under_net(make_cfg) -> None:
    """Each network hyperparameter is written once, in model.net, and reaches the network."""
    cfg = make_cfg("train", ["model.net.hidden_size=24", "model.net.attention=general"])
    tokenizer = hydra.utils.instantiate(cfg.model.tokenizer)
    tokenizer.fit(["hello there", "how are you"])
    module = hydra.utils.instantiate(cfg.model, tokenizer=tokenizer)
    assert module.net.config.hidden_size == 24 and module.net.config.attention == "general"
    assert module.net.config.vocab_size == len(tokenizer)
    assert "hidden_size" not in {k for k in cfg.model if k != "net"}


def test_eval_config_composes(make_cfg) -> None:
    cfg = make_cfg("eval", ["ckpt_path=some.ckpt"])
    assert cfg.ckpt_path == "some.ckpt"
    assert cfg.split == "test"


def test_run_dirs_are_unique_within_a_second(make_cfg, tmp_path: Path) -> None:
    from hydra.core.hydra_config import HydraConfig

    dirs = set()
    for _ in range(3):
        make_cfg("train", [])
        dirs.add(str(HydraConfig.get().run.dir))
    assert len(dirs) == 3, dirs
