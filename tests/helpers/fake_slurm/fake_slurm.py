"""Stand-ins for SLURM's commands, enough for submitit and Lightning to run a job here for real.

`sbatch SCRIPT` records the script, answers "Submitted batch job N" and runs it in the
background (array elements one after another) with the SLURM_* variables a real allocation
sets; the script's `srun` starts nodes x tasks-per-node processes with SLURM_PROCID,
SLURM_LOCALID and SLURM_NODEID; `sacct` reports the states; `scancel` and `scontrol` are
recorded, and `scontrol requeue` kills the job and runs it again (SLURM_RESTART_COUNT + 1).
$FAKE_SLURM_SIGNAL_WHEN (a glob) sends SIGUSR2 to the tasks once a path matches, as a time
limit's `--signal` would. Everything lives under $FAKE_SLURM_DIR: submitted/<job id>.sh,
state/<job id>_<i>, calls.log. Every "node" is this machine (SLURM_NODELIST=localhost).
"""

from __future__ import annotations

import glob
import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

HOME = Path(os.environ.get("FAKE_SLURM_DIR", "/tmp/fake_slurm"))
RUNNER = Path(__file__).resolve()


def record(*args: str) -> None:
    HOME.mkdir(parents=True, exist_ok=True)
    with (HOME / "calls.log").open("a") as f:
        f.write(shlex.join(args) + "\n")


def sbatch_options(script: str) -> dict[str, str]:
    """The script's `#SBATCH --key=value` lines ('--flag' alone: 'true')."""
    options = {}
    for match in re.finditer(r"^#SBATCH --([\w-]+)(?:=(.*))?$", script, re.MULTILINE):
        options[match.group(1)] = shlex.split(match.group(2))[0] if match.group(2) else "true"
    return options


def sbatch(args: list[str]) -> int:
    path = Path(args[-1])
    script = path.read_text()
    record("sbatch", *args)
    job_id = random.randint(1000, 8999) * 10  # Lightning's port: 15000 + the id's last 4 digits
    (HOME / "submitted").mkdir(parents=True, exist_ok=True)
    (HOME / "submitted" / f"{job_id}.sh").write_text(script)
    print(f"Submitted batch job {job_id}", flush=True)
    log = (HOME / f"{job_id}.runner.log").open("w")
    subprocess.Popen(
        [sys.executable, str(RUNNER), "_run", str(job_id), str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return 0


def allocation_env(job_id: int, index: int | None, options: dict[str, str]) -> dict[str, str]:
    """The variables SLURM sets in a job (array element `index`) of these sbatch options."""
    nodes = int(options.get("nodes", "1"))
    per_node = int(options.get("ntasks-per-node", "1"))
    env = {
        "SLURM_JOB_ID": str(job_id if index is None else job_id + 1 + index),
        "SLURM_JOB_NAME": options.get("job-name", "job"),
        "SLURM_JOB_NUM_NODES": str(nodes),
        "SLURM_NNODES": str(nodes),
        "SLURM_NTASKS": str(nodes * per_node),
        "SLURM_NTASKS_PER_NODE": str(per_node),
        "SLURM_TASKS_PER_NODE": f"{per_node}(x{nodes})",
        "SLURM_JOB_NODELIST": "localhost",
        "SLURM_NODELIST": "localhost",
        "SLURM_SUBMIT_DIR": os.getcwd(),
        "SLURM_CPUS_PER_TASK": options.get("cpus-per-task", "1"),
        "SLURM_JOB_PARTITION": options.get("partition", "debug"),
        "SLURM_RESTART_COUNT": "0",
    }
    if index is not None:
        env.update(SLURM_ARRAY_JOB_ID=str(job_id), SLURM_ARRAY_TASK_ID=str(index))
    return env


def run_job(job_id: int, script_path: str) -> int:
    """Run every element of the submitted job in turn, as the scheduler would."""
    options = sbatch_options((HOME / "submitted" / f"{job_id}.sh").read_text())
    array = options.get("array")
    indices: list[int | None] = [None]
    if array:
        first, last = array.split("%")[0].split("-")
        indices = list(range(int(first), int(last) + 1))
    (HOME / "state").mkdir(parents=True, exist_ok=True)
    keys = [f"{job_id}" if i is None else f"{job_id}_{i}" for i in indices]
    for key in keys:
        (HOME / "state" / key).write_text("PENDING")
    for index, key in zip(indices, keys, strict=True):
        env = {**os.environ, **allocation_env(job_id, index, options)}
        restarts = 0
        while True:
            (HOME / "state" / key).write_text("RUNNING")
            env["SLURM_RESTART_COUNT"] = str(restarts)
            code = run_element(job_id, key, env, signal_it=restarts == 0)
            if code is not None:
                break
            restarts += 1  # `scontrol requeue`: the job runs again from its script
            record("requeued", key, str(restarts))
        (HOME / "state" / key).write_text("COMPLETED" if code == 0 else "FAILED")
    return 0


def run_element(job_id: int, key: str, env: dict[str, str], signal_it: bool) -> int | None:
    """One run of a job's script: its exit code, or None when `scontrol requeue` ended it.

    With $FAKE_SLURM_SIGNAL_WHEN (a glob), SIGUSR2 goes to the job's tasks once a path matches,
    as SLURM's `--signal=USR2@<s>` does before a time limit."""
    requeue = HOME / "requeue" / key
    when = os.environ.get("FAKE_SLURM_SIGNAL_WHEN", "") if signal_it else ""
    script = HOME / "submitted" / f"{job_id}.sh"
    proc = subprocess.Popen(["bash", str(script)], env=env, start_new_session=True)
    while proc.poll() is None:
        time.sleep(0.2)
        if when and glob.glob(when):
            when = ""
            for pid in (HOME / "pids" / key).read_text().split():
                os.kill(int(pid), signal.SIGUSR2)
            record("signal", "USR2", key)
        if requeue.exists():
            requeue.unlink()
            os.killpg(proc.pid, signal.SIGKILL)  # SLURM ends the job, then queues it again
            proc.wait()
            return None
    return proc.returncode


def fill(pattern: str, task: int) -> str:
    """srun's filename patterns: %A array job id, %a array index, %j job id, %t task."""
    env = os.environ
    return (
        pattern.replace("%A", env.get("SLURM_ARRAY_JOB_ID", env["SLURM_JOB_ID"]))
        .replace("%a", env.get("SLURM_ARRAY_TASK_ID", "0"))
        .replace("%j", env["SLURM_JOB_ID"])
        .replace("%t", str(task))
    )


def srun(args: list[str]) -> int:
    """srun [--unbuffered] [--output P] [--error P] COMMAND...: one process per task."""
    record("srun", *args)
    files = {}
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag in ("--output", "--error"):
            files[flag] = args.pop(0)
    per_node = int(os.environ["SLURM_NTASKS_PER_NODE"])
    procs = []
    for task in range(int(os.environ["SLURM_NTASKS"])):
        env = {
            **os.environ,
            "SLURM_PROCID": str(task),
            "SLURM_LOCALID": str(task % per_node),
            "SLURM_NODEID": str(task // per_node),
            "SLURM_STEP_ID": "0",
            "SLURM_STEPID": "0",
            "SLURM_STEP_NUM_TASKS": os.environ["SLURM_NTASKS"],
        }
        out = open(fill(files.get("--output", "/dev/null"), task), "a")  # noqa: SIM115
        err = open(fill(files["--error"], task), "a") if "--error" in files else out  # noqa: SIM115
        procs.append(subprocess.Popen(args, env=env, stdout=out, stderr=err))
    (HOME / "pids").mkdir(parents=True, exist_ok=True)
    (HOME / "pids" / job_key()).write_text(" ".join(str(p.pid) for p in procs))
    return max(p.wait() for p in procs)


def job_key() -> str:
    """'<array job>_<index>' for an array element, else the job id (as scontrol takes it)."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env["SLURM_JOB_ID"]


def sacct(args: list[str]) -> int:
    """sacct -o JobID,State,NodeList --parsable2 -j ID...: the states this stand-in recorded."""
    ids = [args[i + 1] for i, a in enumerate(args) if a == "-j"]
    print("JobID|State|NodeList")
    for path in sorted((HOME / "state").glob("*")) if (HOME / "state").is_dir() else []:
        if path.name.split("_")[0] in ids:
            print(f"{path.name}|{path.read_text()}|localhost")
    return 0


def main() -> int:
    command, args = sys.argv[1], sys.argv[2:]
    if command == "_run":
        return run_job(int(args[0]), args[1])
    if command in ("scancel", "scontrol"):
        record(command, *args)
        if command == "scontrol" and args[:1] == ["requeue"]:
            (HOME / "requeue").mkdir(parents=True, exist_ok=True)
            (HOME / "requeue" / args[1]).write_text("")
        return 0
    return {"sbatch": sbatch, "srun": srun, "sacct": sacct}[command](args)


if __name__ == "__main__":
    sys.exit(main())
