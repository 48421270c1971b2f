"""Thin entry point: `python train.py [overrides]` (see conf/train.yaml)."""

from dialoglab.experiment.train import main

if __name__ == "__main__":
    main()
