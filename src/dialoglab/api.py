"""dialoglab as a library (notebooks, scripts): compose a config, train, evaluate, chat.

    import dialoglab
    cfg = dialoglab.compose(["experiment=quickstart", "logger=csv"])
    metrics = dialoglab.train(cfg)
    bot = dialoglab.Chatbot.from_checkpoint("best", strategy="beam", num_beams=3)
    bot.reply("hi, my name is Ana", session="ana")

`compose` is Hydra's compose API over this repository's conf/ (the same configs and overrides
as `python train.py ...`); `train` and `evaluate` are what train.py and eval.py run, returning
their metrics and raising `dialoglab.errors.DialoglabError` on bad input instead of exiting.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

DEFAULT_SESSION = "default"


def compose(
    overrides: Sequence[str] = (),
    config_name: str = "train",
    output_dir: str | Path | None = None,
) -> DictConfig:
    """conf/<config_name>.yaml (train, eval, chat, ...) with `overrides`, as the entry point
    would compose it. For configs that write runs, the run directory is `output_dir`, else a new
    one where the CLI would put it (hydra.run.dir, under ./outputs/); it is created and set in
    `paths.output_dir`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from dialoglab.experiment.runner import CONFIG_DIR

    GlobalHydra.instance().clear()  # a notebook may compose many times
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name, overrides=list(overrides), return_hydra_config=True)
    writes_runs = "paths" in cfg  # train, eval, export (chat and serve write nothing)
    run_dir = Path(output_dir if output_dir is not None else cfg.hydra.run.dir).resolve()
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.runtime.cwd = str(Path.cwd())
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)  # what code reading HydraConfig sees, as in the CLI
    with open_dict(cfg):
        del cfg["hydra"]
        if writes_runs:
            run_dir.mkdir(parents=True, exist_ok=True)
            cfg.paths.output_dir = str(run_dir)
    return cfg


def train(cfg: DictConfig) -> dict[str, float]:
    """Train as `python train.py` does (fit, test the best checkpoint, report); the metrics."""
    from dialoglab.experiment.console import quiet_third_party
    from dialoglab.experiment.train import train as run_training

    quiet_third_party()
    return run_training(cfg)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate `cfg.ckpt_path` as `python eval.py` does (compose with config_name="eval")."""
    from dialoglab.experiment.console import quiet_third_party
    from dialoglab.experiment.evaluate import evaluate as run_evaluation

    quiet_third_party()
    return run_evaluation(cfg)


class Chatbot:
    """A trained model to talk to: one conversation (history and memory) per session id.

    Wraps `dialoglab.chat.bot.Chatbot` (`.engine`), which the CLI, web app and HTTP API use.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self._sessions: dict[str, Any] = {}

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        preset: str | None = None,
        quantize: str = "auto",
        device: str = "cpu",
        **decoding: Any,
    ) -> Chatbot:
        """Load a checkpoint: a path, or `best` / `last` (of the newest run under ./outputs/).

        `preset` names a decoding preset of conf/decoding (None: the one chat, web and API use
        by default); `decoding` sets DecodingConfig fields on top of it (strategy="beam",
        num_beams=3, temperature=0.7, ...).
        `quantize`: auto (int8 on the CPU), none, int8 or bf16.
        """
        from dialoglab.chat.bot import Chatbot as Engine
        from dialoglab.chat.bot import decoding_config

        config = decoding_config(preset, **decoding)
        return cls(Engine.from_checkpoint(path, config, device=device, quantize=quantize))

    def reply(self, text: str, session: str = DEFAULT_SESSION) -> str:
        """The reply to `text` in conversation `session` (created on first use)."""
        return self.engine.reply(text, self.session(session)).text

    def session(self, session_id: str = DEFAULT_SESSION) -> Any:
        """The `Session` (history, memory) of `session_id`, created on first use."""
        if session_id not in self._sessions:
            self._sessions[session_id] = self.engine.new_session(session_id)
        return self._sessions[session_id]

    def history(self, session: str = DEFAULT_SESSION) -> list[str]:
        """The turns of `session` so far, user and bot alternating, oldest first."""
        return list(self.session(session).history)

    def forget(self, session: str = DEFAULT_SESSION) -> None:
        """Drop `session` entirely: its history and what it remembered about the user."""
        self._sessions.pop(session, None)

    def __repr__(self) -> str:
        return f"Chatbot({self.engine.describe()})"
