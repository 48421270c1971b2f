"""The Optuna study of a sweep directory, for `dialoglab.report`: how its trials ended
(complete / pruned / failed / running) and Optuna's parameter importances.

Read from `<sweep dir>/optuna.sqlite` (the sweeper's default storage); nothing when the folder
has no study (a grid multirun) or Optuna is not installed.
"""

from __future__ import annotations

import html
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}


@dataclass
class StudySection:
    study_name: str
    counts: dict[str, int]  # state -> trials
    importances: dict[str, float] = field(default_factory=dict)  # parameter -> share
    states: dict[str, str] = field(default_factory=dict)  # run dir name (trial number) -> status

    def markdown(self) -> str:
        """The section (ends with a blank line); empty without a study."""
        if not self.study_name:
            return ""
        counts = ", ".join(f"{n} {STATES[s]}" for s, n in self.counts.items() if n)
        lines = [f"## Optuna study `{self.study_name}`", "", f"Trials: {counts or 'none'}.", ""]
        if self.importances:
            lines += ["| parameter | importance |", "| --- | ---: |"]
            lines += [f"| {k} | {v:.3f} |" for k, v in self.importances.items()]
            lines.append("")
        return "\n".join(lines) + "\n\n"

    def html(self) -> str:
        if not self.study_name:
            return ""
        counts = ", ".join(f"{n} {STATES[s]}" for s, n in self.counts.items() if n)
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v:.3f}</td></tr>"
            for k, v in self.importances.items()
        )
        table = (
            f"<table><thead><tr><th>parameter</th><th>importance</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
            if rows
            else ""
        )
        return (
            f"<h2>Optuna study {html.escape(self.study_name)}</h2>"
            f"<p>Trials: {html.escape(counts or 'none')}.</p>{table}"
        )


def trial_status(trial: Any) -> str:
    """A trial's state as the runs table shows it."""
    from dialoglab.experiment.study import FAILURE, PRUNED_AT

    state = trial.state.name
    if state == "PRUNED":
        return f"pruned after epoch {trial.user_attrs.get(PRUNED_AT, '?')}"
    if state == "FAIL":
        return f"failed: {trial.user_attrs.get(FAILURE, '')}"[:200]
    return {"COMPLETE": "ok", "RUNNING": "running"}.get(state, state.lower())


def read_study(root: Path, runs: list[Any]) -> StudySection:
    """The study in `root/optuna.sqlite` (the first, if several; an empty section without one);
    `runs` of its trials get the trial's state as their status."""
    path = Path(root) / "optuna.sqlite"
    if not path.is_file():
        return StudySection("", {})
    try:
        import optuna

        from dialoglab.experiment.study import open_storage
    except ImportError:  # the sweeps extra is not installed
        return StudySection("", {})
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(f"sqlite:///{path.resolve()}")
    names = [s.study_name for s in storage.get_all_studies()]
    if not names:
        return StudySection("", {})
    study = optuna.load_study(study_name=names[0], storage=storage)
    trials = study.get_trials(deepcopy=False)
    counts = {s: sum(t.state.name == s for t in trials) for s in STATES}
    section = StudySection(study.study_name, counts)
    section.states = {str(t.number): trial_status(t) for t in trials}
    if counts["COMPLETE"] >= 2 and len(study.directions) == 1:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                section.importances = optuna.importance.get_param_importances(study)
        except (RuntimeError, ValueError) as err:  # e.g. no parameter varies
            log.info("no parameter importances for %s: %s", study.study_name, err)
    mark_runs(runs, section)
    return section


def mark_runs(runs: list[Any], section: StudySection) -> None:
    """Each run of a trial gets the trial's state (pruned runs would look finished)."""
    for run in runs:
        status = section.states.get(run.name)
        if status and status != "ok" and run.status != "failed":
            run.status = status


def with_study(page: str, section: StudySection) -> str:
    """The report's HTML page with the study's section after the runs table."""
    return page.replace("</table>", "</table>" + section.html(), 1)
