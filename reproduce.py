"""Reproduce the paper's comparison in one command: train and test every cell of a grid
over several seeds, then tabulate and compare (method §8).

    python reproduce.py -mt Temp-GRU,Temp-CNN,Temp-Trans,Temp-Triplet -emo Act,Dom,Val \\
        -nc 10 --seeds 31,32,33 -ep 30 -batch 64 --features F --labels L --out sweep
    python reproduce.py --report sweep     # rebuild results.md and results.png from results.csv

Lists are comma-separated; every combination of -mt, -emo, -nc, -unlabel, --precision
and --seeds is one run: `main.py` then `online_testing.py`, each in its own folder
`OUT/runs/<type>_<emo>_K<k>_U<n>_<precision>_ep<E>_b<B>_seed<s>/` (checkpoints, main.log,
test.log, test_<split>.json, run.json). `--jobs N` runs N CPU runs at once (each gets
cores // N threads); `--devices cuda:0,cuda:1` runs one per device (name a device twice
for two runs on it). Run the same command again after a kill: finished runs are kept,
interrupted trainings resume (`main.py --resume`), finished trainings without a test
result are only tested. A failed run is recorded with its error and the sweep goes on
(exit status 1). Results: OUT/results.csv (one row per run), OUT/results.md (mean ±
sample std per cell in the layout of the published table, and paired tests over the
seeds between the levels of every factor that varies), OUT/results.png.
"""
import argparse
import csv
import fcntl
import itertools
import json
import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

import numpy as np

import main as train_script
from model import checkpoint_name
from utils import (EMOTIONS, TEMPORAL_TYPES, TEST_SPLIT, UserError, at_least, atomic_path, run_cli,
                   save_json)

ROOT = os.path.dirname(os.path.abspath(__file__))
PRECISIONS = ("auto", "fp32", "bf16")
COLUMNS = ("type", "attribute", "K", "unlabel", "seed", "epochs", "batch", "split", "CCC",
           "best_epoch", "seconds", "precision", "device", "commit", "status", "error")
# The factors compared pairwise (CSV column, name in results.md); the others are context.
FACTORS = (("type", "temporal type"), ("K", "K"), ("unlabel", "unlabel"),
           ("precision", "precision"))
CONTEXT = ("K", "unlabel", "precision", "epochs", "batch", "split")
MIN_PAIRED = 3
ATTRIBUTE_NAMES = {"Act": "arousal", "Dom": "dominance", "Val": "valence"}


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
    threads: int        # OMP/MKL threads per run


@dataclass(frozen=True)
class Run:
    """One cell and seed of the grid, and the files it keeps in its folder."""
    type: str
    emo: str
    k: int
    unlabel: int
    precision: str
    seed: int
    epochs: int
    batch: int
    folder: str

    @property
    def name(self):
        return os.path.basename(self.folder)

    def path(self, suffix):
        """A file beside the checkpoint: '' → the checkpoint, '_history.json', '_resume.pth.tar'."""
        name = checkpoint_name(self.epochs, self.batch, self.k, self.emo, self.type, self.unlabel)
        return os.path.join(self.folder, name[:-len(".pth.tar")] + (suffix or ".pth.tar"))

    def test_json(self, split):
        return os.path.join(self.folder, f"test_{split}.json")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("the grid (comma-separated lists)")
    g.add_argument("-mt", "--model_type", default=",".join(TEMPORAL_TYPES),
                   help="temporal types (default: all four)")
    g.add_argument("-emo", "--emo_attr", default=",".join(EMOTIONS), help="attributes (default Act,Dom,Val)")
    g.add_argument("-nc", "--num_clusters", default="10", help="k-means clusters K, each ≥ 2 (default 10)")
    g.add_argument("-unlabel", "--unlabel_size", default="0", help="unlabelled turns (default 0)")
    g.add_argument("--precision", default="auto", help="auto, fp32, bf16 (default auto)")
    g.add_argument("--seeds", default="31,32,33", help="training seeds (default 31,32,33)")
    g.add_argument("-ep", "--epochs", type=at_least(1, "-ep"), default=30, help="epochs (default 30)")
    g.add_argument("-batch", "--batch_size", type=at_least(1, "-batch"), default=64,
                   help="turns per batch (default 64)")
    d = p.add_argument_group("data (as main.py and online_testing.py take them)")
    d.add_argument("--features", default=train_script.FEATURES_DIR, help="folder of .mat features")
    d.add_argument("--labels", default=train_script.LABELS_CSV, help="labels_concensus.csv")
    d.add_argument("--norm-dir", default="./NormTerm", help="NormTerm folder")
    d.add_argument("--unlabeled-features", default=train_script.UNLABELED_FEATURES_DIR,
                   help="folder of unlabelled .mat features (for -unlabel N > 0)")
    d.add_argument("--cache-dir", default=train_script.CACHE_DIR,
                   help="chunk cache folder, shared by all runs")
    d.add_argument("--val-split", default="auto", help="validation split (main.py's --val-split)")
    d.add_argument("--split", default=TEST_SPLIT, help="split to test on (default Test1)")
    o = p.add_argument_group("running")
    o.add_argument("--out", help="output folder of the sweep")
    o.add_argument("--jobs", type=at_least(1, "--jobs"), help="CPU runs at once (default 1)")
    o.add_argument("--devices", help="one run at a time per device listed, e.g. cuda:0,cuda:1")
    o.add_argument("--report", metavar="DIR",
                   help="only rebuild DIR/results.md and DIR/results.png from DIR/results.csv")
    args = p.parse_args(argv)
    if args.report is None and args.out is None:
        p.error("give --out DIR for a sweep, or --report DIR to rebuild a report")
    if args.jobs is not None and args.devices is not None:
        p.error("--jobs and --devices both set: give one (list a device twice for two runs on it)")
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
    """Check the grid and the data paths; UserError (exit 1) for anything wrong."""
    slots = parse_devices(args.devices) if args.devices else ("cpu",) * (args.jobs or 1)
    s = Settings(
        types=parse_list(args.model_type, "-mt", allowed=TEMPORAL_TYPES),
        emotions=parse_list(args.emo_attr, "-emo", allowed=EMOTIONS),
        clusters=parse_list(args.num_clusters, "-nc", int, minimum=2),
        unlabels=parse_list(args.unlabel_size, "-unlabel", int, minimum=0),
        precisions=parse_list(args.precision, "--precision", allowed=PRECISIONS),
        seeds=parse_list(args.seeds, "--seeds", int, minimum=0),
        epochs=args.epochs, batch=args.batch_size,
        features=os.path.abspath(args.features), labels=os.path.abspath(args.labels),
        norm_dir=os.path.abspath(args.norm_dir),
        unlabeled_features=os.path.abspath(args.unlabeled_features),
        cache_dir=os.path.abspath(args.cache_dir), val_split=args.val_split, split=args.split,
        out=os.path.abspath(args.out),
        slots=slots, threads=max(1, usable_cores() // len(slots)))
    checks = [(s.features, os.path.isdir, "--features folder"), (s.labels, os.path.isfile, "--labels file"),
              (s.norm_dir, os.path.isdir, "--norm-dir folder")]
    if any(s.unlabels):
        checks.append((s.unlabeled_features, os.path.isdir, "--unlabeled-features folder"))
    for path, exists, what in checks:
        if not exists(path):
            raise UserError(f"{what} not found: {path}")
    if os.path.exists(s.out) and not os.path.isdir(s.out):
        raise UserError(f"--out {s.out} exists and is not a folder")
    return s


def grid(s):
    """Every run of the sweep, seeds innermost."""
    runs = []
    for mt, emo, k, n, prec, seed in itertools.product(s.types, s.emotions, s.clusters, s.unlabels,
                                                       s.precisions, s.seeds):
        name = f"{mt}_{emo}_K{k}_U{n}_{prec}_ep{s.epochs}_b{s.batch}_seed{seed}"
        runs.append(Run(mt, emo, k, n, prec, seed, s.epochs, s.batch,
                        os.path.join(s.out, "runs", name)))
    return runs


# --- one run ---------------------------------------------------------------------------------
def read_json(path):
    """A JSON file's contents, or None when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def trained_epochs(run):
    history = read_json(run.path("_history.json"))
    try:
        return len(history["val_loss"])
    except (TypeError, KeyError):
        return 0


def plan(run, split):
    """What a run still needs: 'done', 'test', 'resume', 'overwrite' or 'train'."""
    has_ckpt = os.path.isfile(run.path(""))
    epochs = trained_epochs(run)
    if has_ckpt and read_json(run.test_json(split)) is not None:
        return "done"
    if has_ckpt and epochs >= run.epochs:
        return "test"        # training finished (its history is written after the checkpoint)
    if os.path.isfile(run.path("_resume.pth.tar")) and has_ckpt and epochs > 0:
        return "resume"      # killed after a completed epoch
    if has_ckpt:
        return "overwrite"   # killed inside epoch 1's saving: a checkpoint without a resume state
    return "train"


def commands(run, s, device, action):
    """The main.py and online_testing.py command lines a run still needs."""
    model = ["-ep", str(run.epochs), "-batch", str(run.batch), "-emo", run.emo, "-nc", str(run.k),
             "-mt", run.type, "-unlabel", str(run.unlabel), "--precision", run.precision,
             "--norm-dir", s.norm_dir, "--model-dir", run.folder, "--device", device,
             "--features", s.features, "--labels", s.labels, "--cache-dir", s.cache_dir]
    out = []
    if action in ("train", "resume", "overwrite"):
        extra = {"train": [], "resume": ["--resume"], "overwrite": ["--overwrite"]}[action]
        out.append(("main", [sys.executable, "main.py"] + model +
                    ["--seed", str(run.seed), "--unlabeled-features", s.unlabeled_features,
                     "--val-split", s.val_split] + extra))
    out.append(("test", [sys.executable, "online_testing.py"] + model +
                ["--split", s.split, "--result-json", run.test_json(s.split)]))
    return out


class Children:
    """The subprocesses running now, so that an interrupted sweep can stop them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.procs = set()
        self.stopping = False

    def terminate(self):
        with self.lock:
            self.stopping = True
            for proc in self.procs:
                proc.terminate()


def execute(cmd, log_path, env, lock_fd, children, note):
    """Run one script; its stdout and stderr go to the log. (exit status, last stderr line)."""
    last = ""
    with open(log_path, "a") as log:
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} reproduce.py ({note}, "
                  f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}): {shlex.join(cmd)}\n")
        log.flush()
        with children.lock:
            if children.stopping:
                return None, "interrupted"
            # The run's lock file is passed on: the lock holds while the script lives, even
            # if this sweep is killed, so a restarted sweep cannot run the same run twice.
            try:
                proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.PIPE,
                                        text=True, pass_fds=(lock_fd,))
            except OSError as err:
                return 127, f"cannot start {cmd[0]}: {err}"
            children.procs.add(proc)
        try:
            for line in proc.stderr:
                log.write(line)
                log.flush()
                if line.strip():
                    last = line.strip()
            rc = proc.wait()
        finally:
            with children.lock:
                children.procs.discard(proc)
    if rc < 0:
        last = f"killed by {signal.Signals(-rc).name}"
    return rc, last or f"exit status {rc}"


def child_env(s):
    env = dict(os.environ, OMP_NUM_THREADS=str(s.threads), MKL_NUM_THREADS=str(s.threads),
               PYTHONUNBUFFERED="1")
    return env


def run_one(run, s, device, children, commit):
    """Bring one run to 'done': train (or resume) and test as needed; record the outcome in
    run.json. Returns (status, error, wall seconds); status None when the sweep was stopped."""
    os.makedirs(run.folder, exist_ok=True)
    t0 = time.time()
    lock_fd = os.open(os.path.join(run.folder, ".lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            status, error = "failed", ("another process is still working on this run (a script "
                                       "left by an interrupted sweep?); run the sweep again later")
            save_json(os.path.join(run.folder, "run.json"), {"split": s.split, "status": status,
                                                             "error": error, "commit": commit})
            return status, error, 0.0
        action = plan(run, s.split)
        status, error, test_seconds = "ok", "", None
        for step, cmd in commands(run, s, device, action):
            t_step = time.time()
            rc, last = execute(cmd, os.path.join(run.folder, f"{step}.log"), child_env(s),
                               lock_fd, children, action if step == "main" else "test")
            if children.stopping:
                return None, "interrupted", time.time() - t0
            if rc != 0:
                status, error = "failed", f"{os.path.basename(cmd[1])}: {last}"
                break
            if step == "test":
                test_seconds = time.time() - t_step
        save_json(os.path.join(run.folder, "run.json"),
                  {"split": s.split, "status": status, "error": error, "commit": commit,
                   "test_seconds": test_seconds})
        return status, error, time.time() - t0
    finally:
        os.close(lock_fd)


def trained_device(run):
    """Device and arithmetic of the last training, as main.py's log reports them ('cpu (bf16)')."""
    try:
        with open(os.path.join(run.folder, "main.log")) as f:
            found = re.findall(r"^training .* on (\S+) \((bf16|fp32)\)\s*$", f.read(), re.M)
    except OSError:
        return ""
    return f"{found[-1][0]} ({found[-1][1]})" if found else ""


def make_row(run, s):
    """The results.csv row of a run from its folder: finished, or failed at its last attempt;
    None for a run not attempted yet or left unfinished (it runs again)."""
    record = read_json(os.path.join(run.folder, "run.json")) or {}
    done = plan(run, s.split) == "done"
    if not done and (record.get("split"), record.get("status")) != (s.split, "failed"):
        return None
    result = read_json(run.test_json(s.split)) if done else None
    history = read_json(run.path("_history.json"))
    best = seconds = ""
    if history and history.get("val_loss"):
        best = train_script.saved_epoch(history)
        seconds = sum(history.get("seconds", [])) + (record.get("test_seconds") or 0)
        seconds = f"{seconds:.1f}"
    return {"type": run.type, "attribute": run.emo, "K": run.k, "unlabel": run.unlabel,
            "seed": run.seed, "epochs": run.epochs, "batch": run.batch, "split": s.split,
            "CCC": repr(float(result["ccc"])) if result else "", "best_epoch": best,
            "seconds": seconds, "precision": run.precision, "device": trained_device(run),
            "commit": record.get("commit", ""),
            "status": "ok" if done else "failed",
            "error": "" if done else record.get("error", "")}


# --- the sweep ---------------------------------------------------------------------------------
def git_commit():
    """The project's short commit, or '' where git or the repository is not there."""
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


class Progress:
    """Counts of the runs to do, printed on stdout at every start and finish."""

    def __init__(self, total, slots):
        self.lock = threading.Lock()
        self.total, self.slots = total, slots
        self.done = self.failed = 0
        self.running = {}           # run name → start time
        self.durations = {"ok": [], "failed": []}

    def start(self, run):
        with self.lock:
            self.running[run.name] = time.time()
            self.show(f"started {run.name}")

    def finish(self, run, status, error, seconds, ccc):
        with self.lock:
            self.running.pop(run.name, None)
            self.durations["ok" if status == "ok" else "failed"].append(seconds)
            if status == "ok":
                self.done += 1
                what = f"finished {run.name}: CCC {ccc:.4f}"
            else:
                self.failed += 1
                what = f"FAILED {run.name}: {error}"
            self.show(f"{what} ({seconds:.0f} s)")

    def time_left(self):
        """Mean duration of the finished runs (of the failed ones only while none has finished
        well: they often fail early) × the work left, shared among the slots."""
        durations = self.durations["ok"] or self.durations["failed"]
        if not durations:
            return "unknown"
        mean = float(np.mean(durations))
        now = time.time()
        left = self.total - self.done - self.failed - len(self.running)
        work = mean * left + sum(max(mean - (now - t), 0.0) for t in self.running.values())
        return format_seconds(work / self.slots)

    def show(self, what):
        left = self.total - self.done - self.failed - len(self.running)
        print(f"[{time.strftime('%H:%M:%S')}] {self.done} done, {len(self.running)} running, "
              f"{left} left, {self.failed} failed of {self.total}; time left ≈ {self.time_left()}"
              f"  | {what}", flush=True)


def format_seconds(sec):
    sec = int(round(sec))
    return f"{sec // 3600}h{sec % 3600 // 60:02d}m" if sec >= 3600 else f"{sec // 60}m{sec % 60:02d}s"


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


def sweep(s):
    """Run every unfinished run, writing results.csv and results.md after each; exit code."""
    lock = hold_sweep_lock(s.out)
    try:
        runs = grid(s)
        commit = git_commit()
        todo = [r for r in runs if plan(r, s.split) != "done"]
        print(f"{len(runs)} run(s) in the grid: {len(runs) - len(todo)} already finished, "
              f"{len(todo)} to run, {len(s.slots)} at a time "
              f"({', '.join(s.slots)}; {s.threads} CPU thread(s) each); logs in "
              f"{os.path.join(s.out, 'runs')}", flush=True)
        write_results(s, runs)
        failed = run_all(s, todo, commit, lambda: write_results(s, runs))
        write_results(s, runs, figure=True)
        print(f"{len(todo) - len(failed)} run(s) finished, {len(failed)} failed\n"
              f"results: {os.path.join(s.out, 'results.csv')}, results.md, results.png", flush=True)
        for run, error in failed:
            print(f"failed: {run.name}: {error}", flush=True)
        return 1 if failed else 0
    finally:
        os.close(lock)


def run_all(s, todo, commit, after_each):
    """The runs, len(s.slots) at a time, each on a free slot's device; the failed ones."""
    free = queue.Queue()
    for device in s.slots:
        free.put(device)
    children, progress, failed = Children(), Progress(len(todo), len(s.slots)), []

    def work(run):
        device = free.get()
        try:
            progress.start(run)
            return run_one(run, s, device, children, commit)
        finally:
            free.put(device)

    pool = ThreadPoolExecutor(max_workers=len(s.slots))
    previous = signal.getsignal(signal.SIGTERM) if in_main_thread() else None
    if previous is not None:
        signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        futures = {pool.submit(work, run): run for run in todo}
        for future in as_completed(futures):
            run = futures[future]
            status, error, seconds = future.result()
            ccc = (read_json(run.test_json(s.split)) or {}).get("ccc", float("nan"))
            progress.finish(run, status, error, seconds, ccc)
            if status != "ok":
                failed.append((run, error))
            after_each()
    except BaseException:      # Ctrl-C, SIGTERM, or a fault here: stop the scripts too
        children.terminate()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return failed


def in_main_thread():
    return threading.current_thread() is threading.main_thread()


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def write_results(s, runs, figure=False):
    """results.csv from the run folders, then results.md (and results.png)."""
    rows = [row for row in (make_row(r, s) for r in runs) if row is not None]
    path = os.path.join(s.out, "results.csv")
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    write_report(s.out, figure=figure)


# --- the report ----------------------------------------------------------------------------------
def read_results(out):
    """results.csv as typed rows (CCC a float for 'ok' rows)."""
    path = os.path.join(out, "results.csv")
    if not os.path.isfile(path):
        raise UserError(f"{path} not found: run a sweep with --out {out} first")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path} lacks the column(s) {', '.join(missing)}")
        rows = list(reader)
    try:
        for row in rows:
            for key in ("K", "unlabel", "seed", "epochs", "batch"):
                row[key] = int(row[key])
            row["CCC"] = float(row["CCC"]) if row["status"] == "ok" else None
            if row["type"] not in TEMPORAL_TYPES or row["attribute"] not in EMOTIONS:
                raise ValueError(f"unknown type or attribute {row['type']!r}, {row['attribute']!r}")
    except ValueError as err:
        raise UserError(f"{path}: a malformed value ({err})")
    return rows


def context_of(row, without=None):
    """What a row's cell shares with others: its K, unlabel, precision, epochs, batch and
    split (a table of results.md); with `without`, also its type, less that factor (the
    runs a paired comparison of `without`'s levels pairs up)."""
    keys = CONTEXT if without is None else ("type",) + CONTEXT
    return tuple((k, row[k]) for k in keys if k != without)


def describe(context):
    names = {"K": "K = {}", "unlabel": "unlabel {}", "precision": "precision {}",
             "epochs": "epochs {}", "batch": "batch {}", "split": "{}", "type": "{}"}
    return ", ".join(names[k].format(v) for k, v in context)


def unique(values):
    return list(dict.fromkeys(values))


def cell_stats(values):
    """(mean, sample std with ddof = 1 or None for one value, n)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None), len(v)


def format_cell(values):
    if not values:
        return "—"
    mean, std, n = cell_stats(values)
    return f"{mean:.4f} ± {std:.4f} (n = {n})" if std is not None else f"{mean:.4f} (n = 1)"


def tables(rows):
    """{context: {(type, attribute): [CCC over seeds]}} of the rows that finished."""
    out = {}
    for row in rows:
        if row["status"] == "ok":
            out.setdefault(context_of(row), {}).setdefault((row["type"], row["attribute"]), []).append(row["CCC"])
    return out


def paired_test(a, b):
    """Mean difference a − b and the two tests' results over paired seeds, as text."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    d = a - b
    n = len(d)
    if n < MIN_PAIRED:
        none = f"no test possible ({n} paired seed(s), at least {MIN_PAIRED} needed)"
        return f"{d.mean():+.4f}", none, none
    from scipy import stats

    if np.all(d == d[0]):
        t_text = "undefined (all differences equal)"
    else:
        t_text = f"{stats.ttest_rel(a, b).pvalue:.4g}"
    nonzero = d[d != 0]
    if nonzero.size == 0:
        w_text = "undefined (all differences zero)"
    else:
        # Zero differences dropped (Wilcoxon's convention); the exact null distribution
        # when the |differences| are distinct, else the normal approximation.
        exact = len(np.unique(np.abs(nonzero))) == nonzero.size
        p = stats.wilcoxon(nonzero, zero_method="wilcox", alternative="two-sided",
                           method="exact" if exact else "asymptotic").pvalue
        dropped = n - nonzero.size
        w_text = (f"{p:.4g} ({'exact' if exact else 'normal approximation, ties'}"
                  f"{f'; {dropped} zero difference(s) dropped' if dropped else ''})")
    return f"{d.mean():+.4f}", t_text, w_text


def comparisons(rows, emo):
    """Every paired comparison for one attribute: (factor, first, second, context, n, texts)."""
    ok = [r for r in rows if r["status"] == "ok" and r["attribute"] == emo]
    out = []
    for key, label in FACTORS:
        levels = unique(r[key] for r in ok)
        for first, second in itertools.combinations(levels, 2):
            for ctx in unique(context_of(r, key) for r in ok):
                xa = {r["seed"]: r["CCC"] for r in ok if r[key] == first and context_of(r, key) == ctx}
                xb = {r["seed"]: r["CCC"] for r in ok if r[key] == second and context_of(r, key) == ctx}
                seeds = sorted(set(xa) & set(xb))
                if seeds:
                    texts = paired_test([xa[s] for s in seeds], [xb[s] for s in seeds])
                    out.append((label, first, second, ctx, len(seeds)) + texts)
    return out


def render_markdown(rows):
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    splits = ", ".join(unique(r["split"] for r in rows)) or TEST_SPLIT
    lines = ["# Reproduction results", "",
             f"{len(rows)} run(s) in results.csv: {len(ok)} finished, {len(failed)} failed "
             f"(left out of the tables). Each cell is the {splits} CCC over seeds: mean ± "
             "sample standard deviation (ddof = 1), n = number of seeds; a cell with n = 1 has "
             "no standard deviation.", ""]
    for ctx, cells in tables(rows).items():
        lines += [f"## {describe(ctx)}", "", "| Temporal modelling | Act | Dom | Val |", "|---|---|---|---|"]
        for mt in [t for t in TEMPORAL_TYPES if any(t == mt for mt, _ in cells)]:
            lines.append(f"| {mt} | " + " | ".join(format_cell(cells.get((mt, e), [])) for e in EMOTIONS) + " |")
        lines.append("")
    lines += ["## Paired comparisons over seeds", "",
              "Each comparison pairs the runs of the same seed that differ in one factor only; "
              "difference = first − second, n = number of paired seeds. Tests (two-sided): the "
              "paired t-test (scipy.stats.ttest_rel) and the Wilcoxon signed-rank test "
              "(scipy.stats.wilcoxon) on the non-zero differences (zero differences dropped, "
              "Wilcoxon's convention), with its exact null distribution when the absolute "
              f"differences are distinct, else the normal approximation. With fewer than {MIN_PAIRED} "
              "paired seeds no test is made.", ""]
    any_comparison = False
    for emo in EMOTIONS:
        found = comparisons(rows, emo)
        if not found:
            continue
        any_comparison = True
        lines += [f"### {emo} ({ATTRIBUTE_NAMES[emo]})", "",
                  "| factor | first − second | at | n | mean difference | paired t-test p | Wilcoxon signed-rank p |",
                  "|---|---|---|---|---|---|---|"]
        for label, first, second, ctx, n, diff, t_text, w_text in found:
            lines.append(f"| {label} | {first} − {second} | {describe(ctx)} | {n} | {diff} | {t_text} | {w_text} |")
        lines.append("")
    if not any_comparison:
        lines += ["No factor varies among the finished runs: nothing to compare.", ""]
    if failed:
        lines += ["## Failed runs", "", "| run | status | error |", "|---|---|---|"]
        for r in failed:
            name = (f"{r['type']} {r['attribute']}, K = {r['K']}, unlabel {r['unlabel']}, "
                    f"{r['precision']}, epochs {r['epochs']}, seed {r['seed']}")
            lines.append(f"| {name} | {r['status']} | {r['error'].replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def plot_results(rows, path):
    """CCC per cell (mean ± sample std, each seed a grey dot), one panel per attribute; one
    colour per combination of the other factors, named in the legend below the panels."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = tables(rows)
    emos = [e for e in EMOTIONS if any(e == a for c in cells.values() for _, a in c)]
    types = [t for t in TEMPORAL_TYPES if any(t == mt for c in cells.values() for mt, _ in c)]
    n_panels = max(len(emos), 1)
    fig, axes = plt.subplots(1, n_panels, figsize=(4.2 * n_panels + 1, 4.2 + 0.25 * len(cells)),
                             squeeze=False)
    splits = ", ".join(unique(r["split"] for r in rows)) or TEST_SPLIT
    if not emos:
        axes[0, 0].text(0.5, 0.5, "no finished runs", ha="center", va="center")
        axes[0, 0].set_axis_off()
    width = 0.8 / max(len(cells), 1)
    handles = {}
    for ax, emo in zip(axes[0], emos):
        for i, (ctx, c) in enumerate(cells.items()):
            offset = (i - (len(cells) - 1) / 2) * width
            xs, means, stds = [], [], []
            for j, mt in enumerate(types):
                values = c.get((mt, emo))
                if not values:
                    continue
                mean, std, _ = cell_stats(values)
                xs.append(j + offset)
                means.append(mean)
                stds.append(std or 0.0)
                ax.plot([j + offset + width / 4] * len(values), values, ".", color="grey", ms=4)
            if xs:
                handles[describe(ctx)] = ax.errorbar(xs, means, yerr=stds, fmt="o", capsize=4,
                                                     color=f"C{i % 10}")
        ax.set_xticks(range(len(types)))
        ax.set_xticklabels(types)
        ax.set_xlim(-0.5, len(types) - 0.5)
        ax.set_xlabel("temporal modelling")
        ax.set_ylabel(f"{splits} CCC (mean ± sample std over seeds)")
        ax.set_title(f"{emo} ({ATTRIBUTE_NAMES[emo]})")
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("CCC per cell over seeds; grey dots are the single seeds", fontsize=10)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="lower center", fontsize=8,
                   ncol=1, frameon=False)
    fig.tight_layout(rect=(0, 0.06 * len(handles) / (1 + 0.06 * len(handles)) + 0.02, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_report(out, figure=True):
    """results.md (and results.png) from results.csv alone."""
    rows = read_results(out)
    with atomic_path(os.path.join(out, "results.md")) as tmp:
        with open(tmp, "w") as f:
            f.write(render_markdown(rows))
    if figure:
        plot_results(rows, os.path.join(out, "results.png"))


def main(argv=None):
    args = parse_args(argv)
    if args.report is not None:
        out = os.path.abspath(args.report)
        write_report(out)
        print(f"report: {os.path.join(out, 'results.md')}, {os.path.join(out, 'results.png')}")
        return 0
    return sweep(settings_from_args(args))


if __name__ == "__main__":
    run_cli(main)
