"""A DDP rank > 0: `python -m dialoglab.experiment.ddp_worker <run dir>/ddp/config.yaml`.

Started by `ResolvedConfigLauncher` on rank 0 with LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT set;
runs `train()` on rank 0's resolved config, so every rank trains exactly the same run.
"""

from __future__ import annotations

import logging
import os
import sys

from omegaconf import OmegaConf


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m dialoglab.experiment.ddp_worker RESOLVED_CONFIG.yaml")
    rank = os.environ.get("LOCAL_RANK", "?")
    logging.basicConfig(
        level=logging.WARNING, format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s"
    )
    from dialoglab.experiment.train import train  # after logging is set up

    cfg = OmegaConf.load(args[0])
    train(cfg)  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
