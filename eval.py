"""Thin entry point: `python eval.py [overrides]` (see conf/eval.yaml)."""

from dialoglab.experiment.evaluate import main

if __name__ == "__main__":
    main()
