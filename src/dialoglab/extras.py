"""Optional features and the pip extra each one needs (pyproject.toml's optional-dependencies).

`pip install dialoglab` holds what training, evaluation and the terminal chat need; the web app,
the HTTP API and sweeps need an extra. Their entry points call `require_extra` (or
`exit_unless_installed` before importing the feature) so that a missing extra is one line naming
the command to run, `pip install 'dialoglab[serve]'`, not an ImportError traceback.
"""

from __future__ import annotations

import importlib.util

from dialoglab.errors import DialoglabError

JOBLIB = "hydra_plugins.hydra_joblib_launcher"
SUBMITIT = "hydra_plugins.hydra_submitit_launcher"
# extra -> the modules of it that dialoglab imports (the extra's packages in pyproject.toml)
EXTRAS: dict[str, tuple[str, ...]] = {
    "web": ("streamlit", "matplotlib"),
    "serve": ("fastapi", "uvicorn", "pydantic"),
    "sweeps": ("optuna", "sqlalchemy", "matplotlib", JOBLIB, SUBMITIT),
}
# what each extra is for, in the message (a caller may name a narrower feature)
FEATURES = {"web": "the web app", "serve": "the HTTP API", "sweeps": "an Optuna sweep"}
# command-line overrides that pick a Hydra plugin of an extra (Hydra fails on them while
# composing the config, before any of dialoglab's code runs) -> (extra, module)
OVERRIDES = {
    "hydra/launcher=local": ("sweeps", JOBLIB),
    "hydra/launcher=joblib": ("sweeps", JOBLIB),
    "hydra/launcher=slurm": ("sweeps", SUBMITIT),
    "hydra/launcher=submitit_slurm": ("sweeps", SUBMITIT),
    "hydra/launcher=submitit_local": ("sweeps", SUBMITIT),
}


class MissingExtraError(DialoglabError, ImportError):
    """A feature's optional dependencies are not installed; the message says which extra to add."""


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The `modules` (dotted names too) that cannot be imported here: not installed, or blocked."""
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken install, or sys.modules[name] is None
            found = False
        if not found:
            missing.append(name)
    return missing


def require_extra(extra: str, *modules: str, feature: str | None = None) -> None:
    """Raise MissingExtraError unless `modules` (default: all of `extra`'s) can be imported;
    the message names `feature` (default: what the extra is for) and the pip command."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    missing = missing_modules(modules or EXTRAS[extra])
    if missing:
        raise MissingExtraError(
            f"{feature or FEATURES[extra]} needs {', '.join(missing)} (the '{extra}' extra, "
            f"not installed): pip install 'dialoglab[{extra}]'"
        )


def exit_unless_installed(extra: str, *modules: str, feature: str | None = None) -> None:
    """For entry points: as `require_extra`, but a missing extra exits with one line on stderr."""
    try:
        require_extra(extra, *modules, feature=feature)
    except MissingExtraError as err:
        raise SystemExit(f"error: {err}") from None


def exit_unless_overrides_installed(overrides: list[str]) -> None:
    """For entry points, before Hydra: exit with one line when an override picks a plugin
    (e.g. `hydra/launcher=local`) whose extra is not installed."""
    for override in overrides:
        if override.lstrip("+") in OVERRIDES:
            extra, module = OVERRIDES[override.lstrip("+")]
            exit_unless_installed(extra, module, feature=f"`{override}`")
