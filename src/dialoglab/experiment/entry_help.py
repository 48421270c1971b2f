"""`python train.py --help` (and eval, chat, serve, export): the config groups that entry point
accepts, not every folder of conf/.

Hydra's default help lists all groups under conf/ ($APP_CONFIG_GROUPS), also those of other
entry points (train.py would show `decoding`, which it rejects). conf/hydra/help/dialoglab.yaml
instead interpolates `${config_groups:}` (registered in resolvers.py): the groups in the composed config's defaults tree
(`hydra.runtime.choices`) with their options from Hydra's own config loader.
"""

from __future__ import annotations

from typing import Any

from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf


def config_groups(*, _root_: DictConfig) -> str:
    """One line per accepted group: `group: option, option (default: chosen)`."""
    choices: dict[str, Any] = dict(OmegaConf.select(_root_, "hydra.runtime.choices") or {})
    loader = (
        GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    )
    lines = []
    for group in sorted(g for g in choices if g != "hydra" and not g.startswith("hydra/")):
        options = sorted(loader.get_group_options(group)) if loader is not None else []
        chosen = choices[group]
        default = f" (default: {chosen})" if chosen is not None else " (default: none)"
        lines.append(f"{group}: {', '.join(options)}{default}")
    return "\n".join(lines)
