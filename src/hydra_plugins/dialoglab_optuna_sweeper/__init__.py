"""Hydra plugin: `hydra/sweeper=dialoglab_optuna` (see dialoglab.experiment.sweeper)."""
