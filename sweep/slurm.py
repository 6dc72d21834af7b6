"""The SLURM executor of a reproduce.py sweep, through submitit.

Every run that is neither finished nor queued or running on SLURM becomes one SLURM job, all
of them submitted together as one job array; each job (sweep/slurm_job.py) runs the local
executor's one-run code (sweep/local.py's run_one: the same main.py and online_testing.py command
lines, logs and run.json) on its own CPUs or GPU. OUT/slurm/jobs.json records each run's job id, SLURM state, log and, for
a failed job, the last lines of its error; OUT/slurm/<job id>/ holds submitit's files and the
job's log, linked from the run's folder as slurm.log. SLURM warns a job signal_delay_s seconds
(submitit's default 90) before its time limit, or when it is preempted, with SIGUSR2: submitit's
checkpointing then requeues it, and the requeued job continues with main.py --resume from its
last completed epoch. States come from SLURM's accounting (sacct), pending reasons from its
queue (sweep/slurm_queue.py); a job no node of its partition can run is refused before it is
submitted (sweep/slurm_fit.py), and one SLURM will never start is reported, not waited for.
"""
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import replace

import submitit

from sweep.local import format_seconds, raise_interrupt
from sweep.run import ROOT, plan, read_json
from sweep.slurm_fit import check_fits
from sweep.slurm_job import RunJob, check_accounting, make_executor
from sweep.slurm_queue import cannot_resolve, job_states, pending_reasons
from utils import UserError, save_json

FOLDER = "slurm"              # OUT/slurm: the ledger, and one folder per job (submitit's %j)
LEDGER = "jobs.json"
POLL_SECONDS = 30             # between two looks at the jobs' states (one sacct call for all)
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
# --- the ledger: OUT/slurm/jobs.json ----------------------------------------------------------
class Ledger:
    """OUT/slurm/jobs.json: the sweep's Settings (as JSON, for --report) and, per run name,
    its job's record: job id, SLURM state, status, log, submission time, a failure's error."""

    def __init__(self, out, settings_json):
        self.out, self.settings = out, settings_json
        self.jobs = (read_json(ledger_path(out)) or {}).get("jobs", {})

    def save(self):
        save_json(ledger_path(self.out), {"settings": self.settings, "jobs": self.jobs})

    def in_flight(self, runs):
        """The runs whose job is queued or running (a finished run's job may still be ending)."""
        return [r for r in runs if r.name in self.jobs
                and status_of(self.jobs[r.name]["state"]) in IN_FLIGHT]


def ledger_path(out):
    return os.path.join(out, FOLDER, LEDGER)


def recorded_settings(out):
    """The Settings (as JSON) a SLURM sweep in `out` recorded, or None: not a SLURM sweep."""
    return (read_json(ledger_path(out)) or {}).get("settings")


def job_folder(out):
    return os.path.join(out, FOLDER, "%j")


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
    return text[-lines:] or [f"(empty log: {path})"]


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


def refresh(ledger, runs, split, commit, ask_slurm=True):
    """Each run's status now (done, queued, running, failed, cancelled, or None: never
    submitted), the records updated from SLURM's accounting (or as last recorded)."""
    ids = [ledger.jobs[r.name]["job_id"] for r in runs if r.name in ledger.jobs]
    states = job_states(ids) if ask_slurm else {}
    statuses = {}
    for run in runs:
        record = ledger.jobs.get(run.name)
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
    if ask_slurm:
        record_reasons(ledger, runs, statuses)
    return statuses


def record_reasons(ledger, runs, statuses):
    """Each queued job's pending reason in its record, from SLURM's queue; none for the others."""
    queued = [ledger.jobs[r.name] for r in runs if statuses[r.name] == "queued"]
    reasons = pending_reasons([record["job_id"] for record in queued])
    for run in runs:
        ledger.jobs.get(run.name, {}).pop("reason", None)
    for record in queued:
        if record["job_id"] in reasons:
            record["reason"] = reasons[record["job_id"]]


def stuck(ledger, runs, statuses):
    """The queued runs whose job waits for a reason no wait resolves (slurm_queue.STUCK_REASONS)."""
    return [r for r in runs if statuses[r.name] == "queued"
            and cannot_resolve(ledger.jobs[r.name].get("reason", ""))]


# --- submitting --------------------------------------------------------------------------------
def link_log(run, log):
    """runs/<run>/slurm.log → the job's log under OUT/slurm (replaced at each submission)."""
    os.makedirs(run.folder, exist_ok=True)
    link = os.path.join(run.folder, "slurm.log")
    tmp = link + ".tmp"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(os.path.relpath(log, run.folder), tmp)
    os.replace(tmp, link)


def submit(settings, todo, commit, ledger):
    """The runs as one SLURM job array; their records in the ledger."""
    o = settings.slurm
    ex = make_executor(job_folder(settings.out), o)
    job_settings = replace(settings, slots=(o.device,))     # settings.threads: the job's CPUs per process
    try:
        with ex.batch():
            submitted = [ex.submit(RunJob(run, job_settings, commit)) for run in todo]
    except (submitit.core.utils.FailedJobError, subprocess.SubprocessError, OSError) as err:
        raise UserError(f"sbatch refused the job array: {' '.join(str(err).split())}")
    now = time.time()
    for run, job in zip(todo, submitted):
        log = str(job.paths.stdout)
        ledger.jobs[run.name] = {"job_id": job.job_id, "state": "PENDING", "status": "queued",
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


def sweep(settings, runs, commit, write_results, settings_json):
    """Submit what is left as one job array, then wait for every job; exit code (1 if any run
    failed or was cancelled, or a job is stuck pending; 130 on Ctrl-C, which leaves the jobs
    running)."""
    check_accounting()
    ledger = Ledger(settings.out, settings_json)
    statuses = refresh(ledger, runs, settings.split, commit)
    todo = [r for r in runs if statuses[r.name] not in ("done",) + IN_FLIGHT]
    if todo:
        check_fits(settings.slurm)
    n = {k: sum(v == k for v in statuses.values()) for k in STATUSES}
    print(f"{len(runs)} run(s) in the grid: {n['done']} already finished, {n['queued']} queued and "
          f"{n['running']} running on SLURM, {len(todo)} to submit as one job array "
          f"({settings.slurm.describe()}); SLURM logs in {os.path.join(settings.out, FOLDER)}, linked as "
          f"slurm.log in each run's folder", flush=True)
    if todo:
        submitted = submit(settings, todo, commit, ledger)
        statuses.update({r.name: "queued" for r in todo})
        array = submitted[0].job_id.split("_")[0]
        show(statuses, f"submitted {len(todo)} job(s): {array}" +
             (f"_[0-{len(todo) - 1}]" if len(todo) > 1 else ""))
    ledger.save()
    write_results()
    return wait(settings, runs, ledger, statuses, commit, write_results)


def wait(settings, runs, ledger, statuses, commit, write_results):
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    started = time.time()
    try:
        while ledger.in_flight(runs):
            time.sleep(POLL_SECONDS)
            now = refresh(ledger, runs, settings.split, commit)
            changed = [r for r in runs if now[r.name] != statuses[r.name]]
            statuses = now
            for run in changed:
                show(statuses, change_text(run, ledger.jobs.get(run.name), statuses[run.name], settings.split))
            if changed:
                ledger.save()
                write_results()
            blocked = stuck(ledger, runs, statuses)
            if blocked:
                return report_stuck(blocked, ledger, write_results)
    except KeyboardInterrupt:
        return interrupted(settings, runs, ledger, commit, write_results)
    finally:
        signal.signal(signal.SIGTERM, previous)
    ledger.save()
    write_results(figure=True)
    print(f"{counts_text(statuses)} after {format_seconds(time.time() - started)} of waiting\n"
          f"results: {os.path.join(settings.out, 'results.csv')}, results.md, results.png", flush=True)
    return summarise(runs, ledger, statuses)


def report_stuck(blocked, ledger, write_results):
    """One line per run whose job SLURM will never start as it is; the jobs are left for the
    user to cancel or change. Exit code 1."""
    ledger.save()
    write_results()
    ids = [ledger.jobs[r.name]["job_id"] for r in blocked]
    for run, job_id in zip(blocked, ids):
        print(f"stuck: {run.name} (job {job_id}) pending: {ledger.jobs[run.name]['reason']}: "
              "SLURM never starts it as it is", flush=True)
    print(f"{len(ids)} job(s) left pending for you to cancel (scancel {' '.join(ids)}; then "
          "reproduce.py asking for what the partition allows submits them again) or change "
          "(scontrol update JobId=...)", flush=True)
    return 1


def interrupted(settings, runs, ledger, commit, write_results):
    """Ctrl-C (or SIGTERM) while waiting: the jobs' states asked once more, so that only jobs
    SLURM still holds are said to keep running. Exit code 130."""
    statuses = refresh(ledger, runs, settings.split, commit)
    ledger.save()
    write_results()
    left = [ledger.jobs[r.name]["job_id"] for r in ledger.in_flight(runs)]
    if left:
        print(f"\ninterrupted: {len(left)} SLURM job(s) keep running ({', '.join(left)}); "
              f"{collect_hint(settings.out)}", flush=True)
    else:
        print(f"\ninterrupted: no SLURM job of this sweep is queued or running "
              f"({counts_text(statuses)}); the same command submits what is left", flush=True)
    return 130


def summarise(runs, ledger, statuses):
    """The failed and cancelled runs, each with its job; 1 if there is any."""
    bad = [r for r in runs if statuses[r.name] in ("failed", "cancelled")]
    for run in bad:
        record = ledger.jobs[run.name]
        if statuses[run.name] == "failed":
            print(f"failed: {run.name} (job {record['job_id']}, {record['state']}); log: "
                  f"{record['log']}\n" + "\n".join(f"    {line}" for line in record["error"]))
        else:
            print(f"cancelled: {run.name} (job {record['job_id']}): the same command submits it "
                  "again")
    return 1 if bad else 0


def report(settings, runs, write_results, settings_json):
    """--report on a SLURM sweep, while its jobs run or after: the states from SLURM, then
    results.csv, results.md and results.png from the runs' folders."""
    ledger = Ledger(settings.out, settings_json)
    try:
        check_accounting()
        ask_slurm = True
    except UserError as err:      # e.g. the sweep's folder copied off the cluster
        print(f"{err}: the jobs' states below are those last recorded")
        ask_slurm = False
    statuses = refresh(ledger, runs, settings.split, "", ask_slurm)
    ledger.save()
    write_results(figure=True)
    print(f"SLURM sweep {settings.out}: {counts_text(statuses)}")
    for run in runs:
        if statuses[run.name] in IN_FLIGHT:
            record = ledger.jobs[run.name]
            print(f"{statuses[run.name]}: {run.name} (job {record['job_id']})")
            if record.get("reason"):
                never = cannot_resolve(record["reason"])
                print(f"    pending: {record['reason']}" +
                      (": SLURM never starts it as it is; cancel or change it" if never else ""))
    summarise(runs, ledger, statuses)
    if ledger.in_flight(runs):
        print("some jobs are still queued or running: " + collect_hint(settings.out))
    return 0
