"""One run of a reproduce.py sweep as a SLURM job: what the job asks for (the --slurm-* flags
as submitit's executor parameters) and what it runs (RunJob: the local executor's run_one, on
the job's CPUs or GPU). sweep/slurm.py submits these jobs and follows them.
"""
import re
import signal
import subprocess
from dataclasses import dataclass

import submitit

from sweep.local import Children, run_one
from sweep.run import ROOT, plan
from utils import UserError

JOB_NAME = "reproduce"
MAX_REQUEUES = 10             # submitit's max_num_timeout: time limits a run may resume from
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
    def processes(self):
        """Training processes of one run: one per GPU of its job (torchrun), else one."""
        return max(1, self.gpus)

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


# --- the executor -----------------------------------------------------------------------------
def check_accounting():
    """submitit reads job states from sacct: without SLURM's accounting it would wait forever."""
    try:
        done = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True,
                              timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        raise UserError(f"--executor slurm: cannot run SLURM's sacct ({err}); run on a SLURM "
                        "login node (tests/support/slurm_cluster.sh starts a one-machine cluster)")
    if done.returncode != 0:
        raise UserError(f"--executor slurm: SLURM's accounting does not answer (sacct: "
                        f"{done.stderr.strip()}); submitit needs it to see the jobs' states")


def extra_value(text):
    """A --slurm-extra VALUE as submitit wants it: integers and booleans typed, else text."""
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return {"true": True, "false": False}.get(text.lower(), text)


def make_executor(folder, o):
    """submitit's SLURM executor with the runs' resources, its files in `folder` (%j: the
    job id)."""
    try:
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm",
                                   slurm_max_num_timeout=MAX_REQUEUES)
    except RuntimeError as err:
        raise UserError(f"--executor slurm: {err} (tests/support/slurm_cluster.sh starts a one-machine "
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
        """SLURM's warning of the time limit or of preemption: the run is marked stopped (the
        requeue then ends its scripts), and submitit requeues this job, which resumes the run
        from its last completed epoch (run_one's plan)."""
        if self.children is not None:
            self.children.stopping = True
        return super().checkpoint(*args, **kwargs)

    def __getstate__(self):
        return {**self.__dict__, "children": None}     # processes do not travel
