"""Extras: a missing one is one line naming `pip install 'dialoglab[...]'`, never a traceback;
pyproject.toml declares what src/ imports (core or the extra that uses it) and nothing unused.

A missing package is simulated with `sys.modules[name] = None` (what Python does for a blocked
import), not with a fresh virtual environment.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from dialoglab.extras import (
    EXTRAS,
    JOBLIB,
    MissingExtraError,
    exit_unless_installed,
    exit_unless_overrides_installed,
    require_extra,
)

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"dialoglab", "hydra_plugins"}
# declared, used without an import of their own
NOT_IMPORTED = {
    "ninja": "torch.utils.cpp_extension builds dialoglab.accel's C++ extension with it",
    "chatterbot-corpus": "read as data through importlib.resources",
    "optuna-dashboard": "a command (the sweeps docs)",
    "hydra-submitit-launcher": "a Hydra plugin (hydra/launcher=slurm)",
    "hydra-joblib-launcher": "a Hydra plugin (hydra/launcher=local)",
    "tensorboard": "Lightning's TensorBoardLogger (logger=tensorboard)",
}


def block(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def assert_one_clear_line(message: str, extra: str) -> None:
    assert "\n" not in message and "Traceback" not in message
    assert message.startswith("error: ")
    assert message.endswith(f"pip install 'dialoglab[{extra}]'")


def test_require_extra_names_the_missing_modules_and_the_pip_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    block(monkeypatch, "fastapi")
    with pytest.raises(MissingExtraError, match=r"^the HTTP API needs fastapi \(the 'serve'") as e:
        require_extra("serve")
    assert str(e.value).endswith("pip install 'dialoglab[serve]'")
    assert isinstance(e.value, ImportError)  # code catching ImportError still works
    require_extra("web", "json")  # importable: no error
    exit_unless_installed("serve", "json")  # no SystemExit
    with pytest.raises(ValueError, match="unknown extra 'gui'"):
        require_extra("gui")


def test_serve_entry_point_without_the_serve_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    block(monkeypatch, "fastapi", "uvicorn")
    monkeypatch.setattr(sys, "argv", ["serve.py", "ckpt_path=best"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(ROOT / "serve.py"), run_name="__main__")
    assert_one_clear_line(str(exc.value.code), "serve")
    assert "fastapi, uvicorn" in str(exc.value.code)


def test_optuna_sweeper_without_the_sweeps_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra_plugins.dialoglab_optuna_sweeper.dialoglab_optuna_sweeper import (
        DialoglabOptunaSweeper,
    )

    block(monkeypatch, "optuna")
    with pytest.raises(SystemExit) as exc:
        DialoglabOptunaSweeper()
    assert_one_clear_line(str(exc.value.code), "sweeps")


def test_report_and_launchers_without_the_sweeps_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    block(monkeypatch, "matplotlib", JOBLIB)
    monkeypatch.setattr(sys, "argv", ["report", "outputs"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("dialoglab.report", run_name="__main__")
    assert_one_clear_line(str(exc.value.code), "sweeps")
    exit_unless_overrides_installed(["seed=1", "hydra/launcher=slurm"])  # submitit is here
    with pytest.raises(SystemExit) as exc:
        exit_unless_overrides_installed(["seed=1", "hydra/launcher=local"])
    assert_one_clear_line(str(exc.value.code), "sweeps")
    assert "`hydra/launcher=local`" in str(exc.value.code)


def test_hparams_search_through_hydra_prints_one_line(tmp_path: Path) -> None:
    """The real entry point: the sweeper's SystemExit passes through Hydra as one line."""
    code = (
        "import runpy, sys; sys.modules['optuna'] = None; "
        f"sys.argv = ['train.py', 'hparams_search=gru_attn_optuna', 'hydra.sweep.dir={tmp_path}']; "
        f"runpy.run_path({str(ROOT / 'train.py')!r}, run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert_one_clear_line(lines[0], "sweeps")


# -- pyproject.toml against src/ ----------------------------------------------------------------
def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared() -> dict[str, set[str]]:
    """'core' and each extra -> the distribution names it declares."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    groups = {"core": project["dependencies"], **project["optional-dependencies"]}
    name = re.compile(r"^\s*([A-Za-z0-9._-]+)")
    return {group: {normalize(name.match(r)[1]) for r in reqs} for group, reqs in groups.items()}


def third_party_imports() -> set[str]:
    """Top-level names of the third-party modules that src/ imports."""
    names = set()
    for path in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - FIRST_PARTY - {"__future__"}


def test_every_import_is_declared_and_every_dependency_used() -> None:
    groups = declared()
    shipped = set().union(*(groups[g] for g in ("core", "web", "serve", "sweeps", "tensorboard")))
    dists = importlib.metadata.packages_distributions()
    imported = set()
    for module in third_party_imports():
        providers = {normalize(d) for d in dists.get(module, [module])}
        assert providers & shipped, (
            f"src/ imports {module} but pyproject.toml declares none of {sorted(providers)}"
        )
        imported |= providers
    unused = shipped - imported - set(NOT_IMPORTED)
    assert not unused, f"declared in pyproject.toml but imported nowhere in src/: {unused}"


def test_each_extras_modules_are_declared_in_that_extra() -> None:
    groups = declared()
    dists = importlib.metadata.packages_distributions()
    for extra, modules in EXTRAS.items():
        for module in modules:
            if module.startswith("hydra_plugins."):  # a plugin: its distribution by name
                providers = {normalize(module.split(".")[1])}
            else:
                providers = {normalize(d) for d in dists.get(module, [module])}
            assert providers & groups[extra], f"{module} is not declared in [{extra}]"
