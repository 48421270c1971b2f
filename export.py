"""Thin entry point: `python export.py ckpt_path=PATH out=DIR` (see conf/export.yaml)."""

from dialoglab.experiment.export import main

if __name__ == "__main__":
    main()
