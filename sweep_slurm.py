"""The SLURM executor of a reproduce.py sweep, through submitit.

Every run that is neither finished nor queued or running on SLURM becomes one SLURM job, all
of them submitted together as one job array; each job runs the local executor's one-run code
(sweep_local.run_one: the same main.py and online_testing.py command lines, logs and run.json)
on its own CPUs or GPU. OUT/slurm/jobs.json records each run's job id, SLURM state, log and, for
a failed job, the last lines of its error; OUT/slurm/<job id>/ holds submitit's files and the
job's log, linked from the run's folder as slurm.log. SLURM warns a job signal_delay_s seconds
(submitit's default 90) before its time limit, or when it is preempted, with SIGUSR2: submitit's
checkpointing then requeues it, and the requeued job continues with main.py --resume from its
last completed epoch. States come from SLURM's accounting (sacct), which submitit reads.
"""
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace

import submitit

from sweep_local import Children, format_seconds, raise_interrupt, run_one
from sweep_run import ROOT, plan, read_json
from utils import UserError, save_json

FOLDER = "slurm"              # OUT/slurm: the ledger, and one folder per job (submitit's %j)
LEDGER = "jobs.json"
JOB_NAME = "reproduce"
POLL_SECONDS = 30             # between two looks at the jobs' states (one sacct call for all)
MAX_REQUEUES = 10             # submitit's max_num_timeout: time limits a run may resume from
ERROR_LINES = 5               # the lines of a failed job's log kept in the ledger and printed
# SLURM's job states (sacct), by what they mean for a run. Every other state of an ended job
# (COMPLETED without the run finished, FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, BOOT_FAIL,
# DEADLINE) is a failure.
QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
                 "CONFIGURING"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "SUSPENDED", "STAGE_OUT", "SIGNALING", "RESIZING",
                  "STOPPED"}
CANCELLED_STATES = {"CANCELLED", "PREEMPTED", "REVOKED"}
STATUSES = ("done", "queued", "running", "failed", "cancelled")
IN_FLIGHT = ("queued", "running")
# sbatch options reproduce.py sets itself, and the flag that sets each where there is one
OWN_OPTIONS = {"partition": "--slurm-partition", "time": "--slurm-time",
               "cpus_per_task": "--slurm-cpus-per-run", "mem": "--slurm-mem",
               "gpus_per_node": "--slurm-gpus-per-run", "array_parallelism": "--slurm-array-parallelism",
               "array": None, "job_name": None, "nodes": None, "ntasks_per_node": None,
               "output": None, "error": None, "chdir": None, "open_mode": None,
               "stderr_to_stdout": None, "additional_parameters": None}
LIST_OPTIONS = ("setup", "teardown", "srun_args")   # repeatable: one line (argument) each


@dataclass(frozen=True)
class SlurmOptions:
    """What each run's SLURM job asks for (the --slurm-* flags)."""
    partition: str
    minutes: int
    cpus: int
    mem_gb: float
    gpus: int
    parallelism: int
    extra: tuple          # (KEY, VALUE) pairs of --slurm-extra, in the order given

    @property
    def device(self):
        """A job sees only the GPUs SLURM gave it, as cuda:0...; none: the CPU."""
        return "cuda" if self.gpus else "cpu"

    def describe(self):
        return (f"partition {self.partition or '(the default)'}, {self.minutes} min, "
                f"{self.cpus} CPU(s){f', {self.gpus} GPU(s)' if self.gpus else ''}"
                f"{f', {self.mem_gb:g} GB' if self.mem_gb else ''} per run"
                f"{f', at most {self.parallelism} at once' if self.parallelism else ''}")


def options_from_args(args):
    """SlurmOptions from the --slurm-* flags; UserError for a bad value."""
    if args.slurm_mem is not None and not args.slurm_mem > 0:
        raise UserError(f"--slurm-mem must be a positive number of GB, got {args.slurm_mem:g}")
    if args.slurm_gpus_per_run > 1:
        raise UserError(f"--slurm-gpus-per-run {args.slurm_gpus_per_run}: one run on several GPUs "
                        "needs main.py's distributed training (torchrun), which this version does "
                        "not have; give 1 GPU per run (the sweep's runs still use many GPUs at once)")
    extra = []
    for item in args.slurm_extra or ():
        key, eq, value = item.partition("=")
        name = key.strip().replace("-", "_")
        if not eq or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise UserError(f"--slurm-extra {item!r}: give KEY=VALUE, e.g. account=myproject")
        if name in OWN_OPTIONS:
            flag = OWN_OPTIONS[name]
            raise UserError(f"--slurm-extra {key}: " + (f"set it with {flag}" if flag else
                                                         "reproduce.py sets this one itself"))
        extra.append((name, value))
    return SlurmOptions(partition=args.slurm_partition, minutes=args.slurm_time,
                        cpus=args.slurm_cpus_per_run, mem_gb=args.slurm_mem,
                        gpus=args.slurm_gpus_per_run, parallelism=args.slurm_array_parallelism,
                        extra=tuple(extra))


# --- one run as a SLURM job ------------------------------------------------------------------
class RunFailed(Exception):
    """A run's script failed: the job fails too, with this as the last line of its error."""


class RunJob(submitit.helpers.Checkpointable):
    """One run, in its SLURM job: the local executor's run_one on the job's device."""

    def __init__(self, run, settings, commit):
        self.run, self.settings, self.commit = run, settings, commit
        self.children = None

    def __call__(self):
        children = self.children = Children()

        def stopping(signum, frame):      # scancel, or SLURM killing the job to requeue it
            children.stopping = True      # no lock: this runs between any two bytecodes

        signal.signal(signal.SIGTERM, stopping)
        print(f"{self.run.name}: {plan(self.run, self.settings.split)} on {self.settings.slots[0]} "
              f"with {self.settings.threads} thread(s); its logs in {self.run.folder}", flush=True)
        status, error, seconds = run_one(self.run, self.settings, self.settings.slots[0],
                                         children, self.commit)
        if status is None:
            raise RunFailed(f"{self.run.name}: stopped by SLURM")
        if status != "ok":
            raise RunFailed(f"{self.run.name}: {error}")
        return f"{self.run.name}: finished in {seconds:.0f} s"

    def checkpoint(self, *args, **kwargs):
        """SLURM's warning of the time limit or of preemption: stop the scripts and requeue;
        the requeued job resumes the run from its last completed epoch (run_one's plan)."""
        if self.children is not None:
            self.children.stopping = True
        return super().checkpoint(*args, **kwargs)

    def __getstate__(self):
        return {**self.__dict__, "children": None}     # processes do not travel


# --- the ledger: OUT/slurm/jobs.json ----------------------------------------------------------
def ledger_path(out):
    return os.path.join(out, FOLDER, LEDGER)


def load_ledger(out):
    """{"settings": the last sweep's Settings as JSON, "jobs": {run name: record}}, or None."""
    return read_json(ledger_path(out))


def save_ledger(out, settings_json, jobs):
    save_json(ledger_path(out), {"settings": settings_json, "jobs": jobs})


def job_folder(out):
    return os.path.join(out, FOLDER, "%j")


def sacct_states(out, job_ids):
    """{job id: SLURM state} for the jobs accounting knows, from one sacct call (submitit's)."""
    jobs = [submitit.SlurmJob(folder=job_folder(out), job_id=j) for j in job_ids]
    if jobs:
        jobs[0].watcher.update()
    states = {}
    for job in jobs:
        state = job.watcher.get_state(job.job_id, mode="cache").split()[0]   # "CANCELLED by 0"
        if state != "UNKNOWN":
            states[job.job_id] = state
    return states


def status_of(state):
    if state in QUEUED_STATES:
        return "queued"
    if state in RUNNING_STATES:
        return "running"
    if state in CANCELLED_STATES:
        return "cancelled"
    return "failed"


def log_tail(path, lines=ERROR_LINES):
    try:
        with open(path, errors="replace") as f:
            text = [line.rstrip() for line in f if line.strip()]
    except OSError:
        return [f"(no log at {path})"]
    return text[-lines:]


def record_failure(run, record, split, commit):
    """A failed job's log tail in its record, and in run.json where the job could not write
    its own failure there (killed by SLURM: out of memory, time limit...), for results.csv."""
    record["error"] = log_tail(record["log"])
    run_json = os.path.join(run.folder, "run.json")
    written = read_json(run_json) or {}
    fresh = os.path.isfile(run_json) and os.path.getmtime(run_json) >= record["submitted"]
    if not (fresh and (written.get("split"), written.get("status")) == (split, "failed")):
        save_json(run_json, {"split": split, "status": "failed", "commit": commit,
                             "error": f"SLURM job {record['job_id']} {record['state']}: "
                                      f"{record['error'][-1]}", "test_seconds": None})


def refresh(out, runs, jobs, split, commit, ask_slurm=True):
    """Each run's status now (done, queued, running, failed, cancelled, or None: never
    submitted), the records updated from SLURM's accounting (or as last recorded)."""
    ids = [jobs[r.name]["job_id"] for r in runs if r.name in jobs]
    states = sacct_states(out, ids) if ask_slurm else {}
    statuses = {}
    for run in runs:
        record = jobs.get(run.name)
        done = plan(run, split) == "done"
        if record is None:
            statuses[run.name] = "done" if done else None
            continue
        state = states.get(record["job_id"], record["state"])   # not in accounting yet: as before
        was = record.get("status")
        record["state"], record["status"] = state, "done" if done else status_of(state)
        if record["status"] == "failed" and was != "failed":
            record_failure(run, record, split, commit)
        statuses[run.name] = record["status"]
    return statuses


# --- submitting --------------------------------------------------------------------------------
def check_accounting():
    """submitit reads job states from sacct: without SLURM's accounting it would wait forever."""
    try:
        done = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        raise UserError(f"--executor slurm: cannot run SLURM's sacct ({err}); run on a SLURM "
                        "login node (tests/slurm_cluster.sh starts a one-machine cluster)")
    if done.returncode != 0:
        raise UserError(f"--executor slurm: SLURM's accounting does not answer (sacct: "
                        f"{done.stderr.strip()}); submitit needs it to see the jobs' states")


def extra_value(text):
    """A --slurm-extra VALUE as submitit wants it: integers and booleans typed, else text."""
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return {"true": True, "false": False}.get(text.lower(), text)


def make_executor(out, o):
    """submitit's SLURM executor with the runs' resources; its files under OUT/slurm/<job id>."""
    try:
        ex = submitit.AutoExecutor(folder=job_folder(out), cluster="slurm",
                                   slurm_max_num_timeout=MAX_REQUEUES)
    except RuntimeError as err:
        raise UserError(f"--executor slurm: {err} (tests/slurm_cluster.sh starts a one-machine "
                        "cluster to try it)")
    ex.update_parameters(name=JOB_NAME, nodes=1, tasks_per_node=1, timeout_min=o.minutes,
                         cpus_per_task=o.cpus, gpus_per_node=o.gpus or None, mem_gb=o.mem_gb,
                         stderr_to_stdout=True, slurm_partition=o.partition,
                         slurm_array_parallelism=o.parallelism)
    # The job imports this module: it starts in the scripts' folder, as local runs do.
    sbatch, lists = {"chdir": ROOT}, {k: [] for k in LIST_OPTIONS}
    try:
        for key, value in o.extra:
            if key in lists:
                lists[key].append(value)
                continue
            try:
                ex.update_parameters(**{f"slurm_{key}": extra_value(value)})
            except NameError:       # not one of submitit's: an sbatch option as it is
                sbatch[key] = value
        ex.update_parameters(slurm_additional_parameters=sbatch,
                             **{f"slurm_{k}": v for k, v in lists.items() if v})
    except (ValueError, TypeError, AssertionError) as err:
        raise UserError(f"--slurm-extra: submitit refused it: {err}")
    return ex


def link_log(run, log):
    """runs/<run>/slurm.log → the job's log under OUT/slurm (replaced at each submission)."""
    os.makedirs(run.folder, exist_ok=True)
    link = os.path.join(run.folder, "slurm.log")
    tmp = link + ".tmp"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(os.path.relpath(log, run.folder), tmp)
    os.replace(tmp, link)


def submit(s, todo, commit, jobs):
    """The runs as one SLURM job array; their records in `jobs`."""
    o = s.slurm
    ex = make_executor(s.out, o)
    job_settings = replace(s, threads=o.cpus, slots=(o.device,))
    try:
        with ex.batch():
            submitted = [ex.submit(RunJob(run, job_settings, commit)) for run in todo]
    except (submitit.core.utils.FailedJobError, subprocess.SubprocessError, OSError) as err:
        raise UserError(f"sbatch refused the job array: {' '.join(str(err).split())}")
    now = time.time()
    for run, job in zip(todo, submitted):
        log = str(job.paths.stdout)
        jobs[run.name] = {"job_id": job.job_id, "state": "PENDING", "status": "queued",
                          "log": log, "submitted": now}
        link_log(run, log)
    return submitted


# --- the sweep on SLURM ----------------------------------------------------------------------------
def counts_text(statuses):
    n = {k: sum(v == k for v in statuses.values()) for k in STATUSES}
    waiting = sum(v is None for v in statuses.values())
    return (", ".join(f"{n[k]} {k}" for k in STATUSES) +
            (f", {waiting} not submitted" if waiting else "") + f" of {len(statuses)}")


def show(statuses, what):
    print(f"[{time.strftime('%H:%M:%S')}] {counts_text(statuses)}  | {what}", flush=True)


def change_text(run, record, status, split):
    job = f"job {record['job_id']}" if record else "no job"
    if status == "done":
        ccc = (read_json(run.test_json(split)) or {}).get("ccc", float("nan"))
        return f"finished {run.name}: CCC {ccc:.4f}"
    if status == "failed":
        return f"FAILED {run.name} ({job}, {record['state']}): {record['error'][-1]}  log: {record['log']}"
    if status == "cancelled":
        return f"cancelled {run.name} ({job}): the same command submits it again"
    return f"{status} {run.name} ({job})"


def collect_hint(out):
    command = shlex.join([sys.executable, os.path.join(ROOT, "reproduce.py"), "--report", out])
    return (f"collect them with `{command}` (counts and the results so far), or run the same "
            "reproduce.py command again: it submits nothing that is queued or running and "
            "waits for them")


def sweep(s, runs, commit, write_results, settings_json):
    """Submit what is left as one job array, then wait for every job; exit code (1 if any run
    failed or was cancelled, 130 on Ctrl-C, which leaves the jobs running)."""
    check_accounting()
    jobs = (load_ledger(s.out) or {}).get("jobs", {})
    statuses = refresh(s.out, runs, jobs, s.split, commit)
    todo = [r for r in runs if statuses[r.name] not in ("done",) + IN_FLIGHT]
    n = {k: sum(v == k for v in statuses.values()) for k in STATUSES}
    print(f"{len(runs)} run(s) in the grid: {n['done']} already finished, {n['queued']} queued and "
          f"{n['running']} running on SLURM, {len(todo)} to submit as one job array "
          f"({s.slurm.describe()}); SLURM logs in {os.path.join(s.out, FOLDER)}, linked as "
          f"slurm.log in each run's folder", flush=True)
    if todo:
        submitted = submit(s, todo, commit, jobs)
        statuses.update({r.name: "queued" for r in todo})
        array = submitted[0].job_id.split("_")[0]
        show(statuses, f"submitted {len(todo)} job(s): {array}" +
             (f"_[0-{len(todo) - 1}]" if len(todo) > 1 else ""))
    save_ledger(s.out, settings_json, jobs)
    write_results()
    return wait(s, runs, jobs, statuses, commit, write_results, settings_json)


def in_flight(runs, jobs):
    """The runs whose job is queued or running (a finished run's job may still be ending)."""
    return [r for r in runs if r.name in jobs and status_of(jobs[r.name]["state"]) in IN_FLIGHT]


def wait(s, runs, jobs, statuses, commit, write_results, settings_json):
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    started = time.time()
    try:
        while in_flight(runs, jobs):
            time.sleep(POLL_SECONDS)
            now = refresh(s.out, runs, jobs, s.split, commit)
            changed = [r for r in runs if now[r.name] != statuses[r.name]]
            statuses = now
            for run in changed:
                show(statuses, change_text(run, jobs.get(run.name), statuses[run.name], s.split))
            if changed:
                save_ledger(s.out, settings_json, jobs)
                write_results()
    except KeyboardInterrupt:
        left = [jobs[r.name]["job_id"] for r in in_flight(runs, jobs)]
        print(f"\ninterrupted: {len(left)} SLURM job(s) keep running ({', '.join(left)}); "
              f"{collect_hint(s.out)}", flush=True)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    save_ledger(s.out, settings_json, jobs)
    write_results(figure=True)
    print(f"{counts_text(statuses)} after {format_seconds(time.time() - started)} of waiting\n"
          f"results: {os.path.join(s.out, 'results.csv')}, results.md, results.png", flush=True)
    return summarise(runs, jobs, statuses)


def summarise(runs, jobs, statuses):
    """The failed and cancelled runs, each with its job; 1 if there is any."""
    bad = [r for r in runs if statuses[r.name] in ("failed", "cancelled")]
    for run in bad:
        record = jobs[run.name]
        if statuses[run.name] == "failed":
            print(f"failed: {run.name} (job {record['job_id']}, {record['state']}); log: "
                  f"{record['log']}\n" + "\n".join(f"    {line}" for line in record["error"]))
        else:
            print(f"cancelled: {run.name} (job {record['job_id']}): the same command submits it "
                  "again")
    return 1 if bad else 0


def report(s, runs, write_results, settings_json):
    """--report on a SLURM sweep, while its jobs run or after: the states from SLURM, then
    results.csv, results.md and results.png from the runs' folders."""
    jobs = (load_ledger(s.out) or {}).get("jobs", {})
    try:
        check_accounting()
        ask_slurm = True
    except UserError as err:      # e.g. the sweep's folder copied off the cluster
        print(f"{err}: the jobs' states below are those last recorded")
        ask_slurm = False
    statuses = refresh(s.out, runs, jobs, s.split, "", ask_slurm)
    save_ledger(s.out, settings_json, jobs)
    write_results(figure=True)
    print(f"SLURM sweep {s.out}: {counts_text(statuses)}")
    for run in runs:
        if statuses[run.name] in IN_FLIGHT:
            print(f"{statuses[run.name]}: {run.name} (job {jobs[run.name]['job_id']})")
    summarise(runs, jobs, statuses)
    if any(v in IN_FLIGHT for v in statuses.values()):
        print("some jobs are still queued or running: " + collect_hint(s.out))
    return 0
