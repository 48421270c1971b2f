"""Thin entry point: `python train.py [overrides]` (see conf/train.yaml)."""

import sys

from dialoglab.experiment.train import main
from dialoglab.extras import exit_unless_overrides_installed

if __name__ == "__main__":
    exit_unless_overrides_installed(sys.argv[1:])  # e.g. hydra/launcher=local needs `sweeps`
    main()
