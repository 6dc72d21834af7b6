"""Reproduce the paper's comparison in one command: train and test every cell of a grid
over several seeds, then tabulate and compare (method §8).

    python reproduce.py -mt Temp-GRU,Temp-CNN,Temp-Trans,Temp-Triplet -emo Act,Dom,Val \\
        -nc 10 --seeds 31,32,33 -ep 30 -batch 64 --features F --labels L --out sweep
    python reproduce.py --report sweep     # rebuild results.md and results.png from results.csv
    python reproduce.py ... --out sweep --executor slurm --slurm-partition gpu --slurm-gpus-per-run 1

Lists are comma-separated; every combination of -mt, -emo, -nc, -unlabel, --precision,
--init-from and --seeds is one run: `main.py` then `online_testing.py`, each in its own folder
`OUT/runs/<type>_<emo>_K<k>_U<n>_<precision>_ep<E>_b<B>[_from-<source>]_seed<s>/` (checkpoints, main.log,
test.log, test_<split>.json, run.json). `--jobs N` runs N CPU runs at once (each gets
cores // N threads); `--devices cuda:0,cuda:1` runs one per device (name a device twice
for two runs on it). Run the same command again after a kill: finished runs are kept,
interrupted trainings resume (`main.py --resume`), finished trainings without a test
result are only tested. A failed run is recorded with its error and the sweep goes on
(exit status 1). Results: OUT/results.csv (one row per run), OUT/results.md (mean ±
sample std per cell in the layout of the published table, and paired tests over the
seeds between the levels of every factor that varies), OUT/results.png.

`--executor slurm` sends the runs to a SLURM cluster instead, one job per run submitted as one
job array through submitit (sweep/slurm.py): the same command lines and files, job ids and
states in OUT/slurm/jobs.json, SLURM logs in OUT/slurm/ (each run's slurm.log). Run the same
command again to submit only what is neither finished nor queued or running and wait for it;
`--report OUT` shows the jobs' states, why the queued ones wait, and the results so far while
they run. A job no node of the partition can run (more CPUs, memory, GPUs or time than it
allows) is refused before anything is submitted; a queued job SLURM will never start as it is
(pending reason PartitionConfig, QOSMax...PerJob...) is reported, and the sweep exits 1 leaving
it for you to cancel or change.
"""
import argparse
import csv
import fcntl
import itertools
import os
import re
import subprocess
from dataclasses import asdict, dataclass, replace

from deepemocluster.corpus import CACHE_DIR, FEATURES_DIR, LABELS_CSV, NORM_DIR, UNLABELED_FEATURES_DIR
from sweep.preflight import check_sweep
from sweep import slurm as sweep_slurm
from sweep import slurm_job as sweep_slurm_job
from sweep.local import AFTER_FULL_DISK, run_all
from sweep.report import COLUMNS, write_report
from sweep.run import FROM_SCRATCH, ROOT, Run, init_tag, make_row, plan
from deepemocluster.releases import RELEASES
from utils import (EMOTIONS, TEMPORAL_TYPES, TEST_SPLIT, UserError, at_least, atomic_path, run_cli)

PRECISIONS = ("auto", "fp32", "bf16")
EXECUTORS = ("local", "slurm")
SLURM_DEFAULTS = {"slurm_time": 240, "slurm_cpus_per_run": 4, "slurm_gpus_per_run": 0}


# --- settings ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """One sweep: the grid, the data, where results go, and how many runs at once."""
    types: tuple
    emotions: tuple
    clusters: tuple
    unlabels: tuple
    precisions: tuple
    seeds: tuple
    epochs: int
    batch: int
    features: str
    labels: str
    norm_dir: str
    unlabeled_features: str
    cache_dir: str
    val_split: str
    split: str
    out: str
    slots: tuple        # the --device of each concurrent run
    threads: int        # OMP/MKL threads per process of a run
    slurm: sweep_slurm_job.SlurmOptions = None    # --executor slurm: what each run's job asks for
    processes: int = 1  # training processes per run (torchrun, one per GPU of a SLURM job)
    inits: tuple = (FROM_SCRATCH,)   # starting points: none (from scratch), releases, checkpoints


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("the grid (comma-separated lists)")
    g.add_argument("-mt", "--model_type", default=",".join(TEMPORAL_TYPES),
                   help="temporal types (default: all four)")
    g.add_argument("-emo", "--emo_attr", default=",".join(EMOTIONS), help="attributes (default Act,Dom,Val)")
    g.add_argument("-nc", "--num_clusters", default="10", help="k-means clusters K, each ≥ 2 (default 10)")
    g.add_argument("-unlabel", "--unlabel_size", default="0", help="unlabelled turns (default 0)")
    g.add_argument("--precision", default="auto", help="auto, fp32, bf16 (default auto)")
    g.add_argument("--init-from", default=FROM_SCRATCH, metavar="SOURCES",
                   help="starting points: none (from scratch; the default), installed releases "
                        "(v1.8, v1.8-ssl) or checkpoint files, as main.py --init-from takes them; "
                        "none,v1.8 compares fine-tuning the release with training from scratch")
    g.add_argument("--seeds", default="31,32,33", help="training seeds (default 31,32,33)")
    g.add_argument("-ep", "--epochs", type=at_least(1, "-ep"), default=30, help="epochs (default 30)")
    g.add_argument("-batch", "--batch_size", type=at_least(1, "-batch"), default=64,
                   help="turns per batch (default 64)")
    d = p.add_argument_group("data (as main.py and online_testing.py take them)")
    d.add_argument("--features", default=FEATURES_DIR, help="folder of .mat features")
    d.add_argument("--labels", default=LABELS_CSV, help="labels_concensus.csv")
    d.add_argument("--norm-dir", default=NORM_DIR, help="NormTerm folder")
    d.add_argument("--unlabeled-features", default=UNLABELED_FEATURES_DIR,
                   help="folder of unlabelled .mat features (for -unlabel N > 0)")
    d.add_argument("--cache-dir", default=CACHE_DIR,
                   help="chunk cache folder, shared by all runs")
    d.add_argument("--val-split", default="auto", help="validation split (main.py's --val-split)")
    d.add_argument("--split", default=TEST_SPLIT, help="split to test on (default Test1)")
    o = p.add_argument_group("running")
    o.add_argument("--out", help="output folder of the sweep")
    o.add_argument("--jobs", type=at_least(1, "--jobs"), help="CPU runs at once (default 1)")
    o.add_argument("--devices", help="one run at a time per device listed, e.g. cuda:0,cuda:1")
    o.add_argument("--report", metavar="DIR",
                   help="only rebuild DIR/results.md and DIR/results.png from DIR/results.csv "
                        "(a SLURM sweep: also the jobs' states, and results.csv from the runs)")
    o.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: runs on this machine (--jobs, --devices); slurm: one SLURM job "
                        "per run, submitted as one job array (default local)")
    c = p.add_argument_group("SLURM (--executor slurm; each run is one job)")
    c.add_argument("--slurm-partition", metavar="NAME", help="partition (default: the cluster's)")
    c.add_argument("--slurm-time", metavar="MIN", type=at_least(1, "--slurm-time"),
                   help="time limit of a job in minutes; a run that reaches it is requeued and "
                        f"resumes (default {SLURM_DEFAULTS['slurm_time']})")
    c.add_argument("--slurm-cpus-per-run", metavar="N", type=at_least(1, "--slurm-cpus-per-run"),
                   help="CPUs of a job, also its runs' threads; at most what a node of the "
                        f"partition has (default {SLURM_DEFAULTS['slurm_cpus_per_run']})")
    c.add_argument("--slurm-mem", metavar="GB", type=float,
                   help="memory of a job in GB (default: the partition's)")
    c.add_argument("--slurm-gpus-per-run", metavar="N", type=at_least(0, "--slurm-gpus-per-run"),
                   help="GPUs of a job; 1 trains on the GPU (default 0: on the CPUs)")
    c.add_argument("--slurm-array-parallelism", metavar="N",
                   type=at_least(1, "--slurm-array-parallelism"),
                   help="at most N of the sweep's jobs at once (default: as SLURM allows)")
    c.add_argument("--slurm-extra", metavar="KEY=VALUE", action="append",
                   help="more for each job, passed to submitit (repeatable): its SLURM "
                        "parameters (account, qos, constraint, exclude, comment, "
                        "signal_delay_s, setup=SHELL LINE...) or any sbatch option")
    args = p.parse_args(argv)
    if args.report is None and args.out is None:
        p.error("give --out DIR for a sweep, or --report DIR to rebuild a report")
    if args.jobs is not None and args.devices is not None:
        p.error("--jobs and --devices both set: give one (list a device twice for two runs on it)")
    slurm_flags = [f"--{k.replace('_', '-')}" for k, v in vars(args).items()
                   if k.startswith("slurm_") and v is not None]
    if args.executor == "local" and slurm_flags:
        p.error(f"{', '.join(slurm_flags)}: for --executor slurm only")
    if args.executor == "slurm":
        if args.jobs is not None or args.devices is not None:
            p.error("--jobs and --devices are for --executor local; on SLURM each run is one job "
                    "(--slurm-array-parallelism limits how many run at once)")
        for key, value in SLURM_DEFAULTS.items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    return args


def parse_list(text, what, convert=str, allowed=None, minimum=None):
    """A comma-separated list of distinct values; a UserError names a bad item."""
    items = [s.strip() for s in text.split(",")]
    if not text.strip() or any(not s for s in items):
        raise UserError(f"{what}: empty item in {text!r} (give a comma-separated list)")
    values = []
    for s in items:
        try:
            value = convert(s)
        except ValueError:
            raise UserError(f"{what}: {s!r} is not an integer")
        if allowed is not None and value not in allowed:
            raise UserError(f"{what}: unknown value {s!r} (allowed: {', '.join(allowed)})")
        if minimum is not None and value < minimum:
            raise UserError(f"{what}: {value} is below the minimum {minimum}")
        if value in values:
            raise UserError(f"{what}: {s!r} given twice")
        values.append(value)
    return tuple(values)


def starting_point(text):
    """An --init-from item: none, a release's name, or a checkpoint's path (made absolute: the
    runs start in the scripts' folder)."""
    return text if text == FROM_SCRATCH or text in RELEASES else os.path.abspath(text)


def parse_devices(text):
    """The --devices list: cpu, cuda or cuda:N (repeats allowed), checked against this machine."""
    devices = [s.strip() for s in text.split(",")]
    for dev in devices:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", dev):
            raise UserError(f"--devices: {dev!r} is not a device (cpu, cuda or cuda:N)")
    cuda = [d for d in devices if d.startswith("cuda")]
    if cuda:
        import torch
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        for dev in cuda:
            index = int(dev.partition(":")[2] or 0)
            if index >= count:
                raise UserError(f"--devices: {dev} asked for, but this machine has {count} CUDA "
                                "device(s)")
    return tuple(devices)


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def settings_from_args(args):
    """The sweep's Settings, its grid and devices checked; UserError (exit 1) for anything wrong.
    (preflight.check_sweep checks the data.)"""
    slurm = sweep_slurm_job.options_from_args(args) if args.executor == "slurm" else None
    processes = slurm.processes if slurm is not None else 1
    if slurm is not None:
        slots, threads = (slurm.device,), max(1, slurm.cpus // processes)
    else:
        slots = parse_devices(args.devices) if args.devices else ("cpu",) * (args.jobs or 1)
        threads = max(1, usable_cores() // len(slots))
    settings = Settings(
        types=parse_list(args.model_type, "-mt", allowed=TEMPORAL_TYPES),
        emotions=parse_list(args.emo_attr, "-emo", allowed=EMOTIONS),
        clusters=parse_list(args.num_clusters, "-nc", int, minimum=2),
        unlabels=parse_list(args.unlabel_size, "-unlabel", int, minimum=0),
        precisions=parse_list(args.precision, "--precision", allowed=PRECISIONS),
        seeds=parse_list(args.seeds, "--seeds", int, minimum=0),
        inits=parse_list(args.init_from, "--init-from", starting_point),
        epochs=args.epochs, batch=args.batch_size,
        features=os.path.abspath(args.features), labels=os.path.abspath(args.labels),
        norm_dir=os.path.abspath(args.norm_dir),
        unlabeled_features=os.path.abspath(args.unlabeled_features),
        cache_dir=os.path.abspath(args.cache_dir), val_split=args.val_split, split=args.split,
        out=os.path.abspath(args.out),
        slots=slots, threads=threads, slurm=slurm, processes=processes)
    return settings


def grid(settings):
    """Every run of the sweep, seeds innermost."""
    runs = []
    for mt, emo, k, n, prec, init, seed in itertools.product(settings.types, settings.emotions, settings.clusters,
                                                             settings.unlabels, settings.precisions, settings.inits,
                                                             settings.seeds):
        name = (f"{mt}_{emo}_K{k}_U{n}_{prec}_ep{settings.epochs}_b{settings.batch}{init_tag(init)}"
                f"_seed{seed}")
        runs.append(Run(mt, emo, k, n, prec, seed, settings.epochs, settings.batch,
                        os.path.join(settings.out, "runs", name), init))
    return runs


# --- the sweep ---------------------------------------------------------------------------------
def git_commit():
    """The project's short commit, or '' where git or the repository is not there."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def hold_sweep_lock(out):
    """Refuse a second sweep on the same folder while one is running; returns the lock fd."""
    os.makedirs(out, exist_ok=True)
    fd = os.open(os.path.join(out, ".reproduce.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"another reproduce.py is running on {out}; wait for it or stop it first")
    return fd


def sweep(settings):
    """Run every unfinished run, writing results.csv and results.md after each; exit code."""
    lock = hold_sweep_lock(settings.out)
    try:
        runs = grid(settings)
        commit = git_commit()
        if settings.slurm is not None:
            return sweep_slurm.sweep(settings, runs, commit,
                                     lambda figure=False: write_results(settings, runs, figure), asdict(settings))
        todo = [r for r in runs if plan(r, settings.split) != "done"]
        print(f"{len(runs)} run(s) in the grid: {len(runs) - len(todo)} already finished, "
              f"{len(todo)} to run, {len(settings.slots)} at a time "
              f"({', '.join(settings.slots)}; {settings.threads} CPU thread(s) each); logs in "
              f"{os.path.join(settings.out, 'runs')}", flush=True)
        write_results(settings, runs)
        failed = run_all(settings, todo, commit, lambda: write_results(settings, runs))
        write_results(settings, runs, figure=True)
        print(f"{len(todo) - len(failed)} run(s) finished, {len(failed)} failed\n"
              f"results: {os.path.join(settings.out, 'results.csv')}, results.md, results.png", flush=True)
        for run, error in failed:
            print(f"failed: {run.name}: {error}", flush=True)
        return 1 if failed else 0
    finally:
        os.close(lock)


def write_results(settings, runs, figure=False):
    """results.csv from the run folders, then results.md (and results.png)."""
    rows = [row for row in (make_row(r, settings) for r in runs) if row is not None]
    path = os.path.join(settings.out, "results.csv")
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    write_report(settings.out, figure=figure)


def settings_from_json(d, out):
    """The Settings a SLURM sweep recorded in its ledger, for --report (its folder: `out`)."""
    d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    slurm = dict(d["slurm"], extra=tuple(tuple(kv) for kv in d["slurm"]["extra"]))
    return replace(Settings(**d), slurm=sweep_slurm_job.SlurmOptions(**slurm), out=out)


def main(argv=None):
    args = parse_args(argv)
    if args.report is not None:
        out = os.path.abspath(args.report)
        recorded = sweep_slurm.recorded_settings(out)
        if recorded is not None:
            settings = settings_from_json(recorded, out)
            runs = grid(settings)
            return sweep_slurm.report(settings, runs,
                                      lambda figure=False: write_results(settings, runs, figure), asdict(settings))
        write_report(out)
        print(f"report: {os.path.join(out, 'results.md')}, {os.path.join(out, 'results.png')}")
        return 0
    settings = settings_from_args(args)
    check_sweep(settings)      # whatever runs the sweep: its data, before the first run starts
    return sweep(settings)


if __name__ == "__main__":
    run_cli(main, disk_full=AFTER_FULL_DISK)
