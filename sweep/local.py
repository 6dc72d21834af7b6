"""The local executor of a reproduce.py sweep: its runs as subprocesses on this machine,
len(slots) at a time (each slot a --device), with per-run lock files, logs, run.json,
progress lines on stdout and a clean stop of the scripts on Ctrl-C or SIGTERM.
"""
import fcntl
import os
import queue
import shlex
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np

from sweep.run import ROOT, commands, plan, read_json
from utils import DISK_FULL, NOTHING_HALF_WRITTEN, UserError, full_disk_reported, save_json

SCRIPT_STOP_S = 10        # a script's time to end on SIGTERM before it is killed
AFTER_FULL_DISK = ("Free space, then run the same command again: finished runs are kept, and "
                   "interrupted trainings resume after their last completed epoch.")


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
    """Run one script; its stdout and stderr go to the log. (exit status, the script's last
    'error: ' line, or else its last stderr line: under torchrun, its failure report follows)."""
    last, error = "", ""
    with full_disk_reported(log_path), open(log_path, "a") as log:
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
                if line.startswith("error: "):
                    error = last
            rc = proc.wait()
        except BaseException:     # submitit's sys.exit after requeuing a SLURM job, a failed log write
            end(proc)
            raise
        finally:
            with children.lock:
                children.procs.discard(proc)
    if rc < 0:
        last = f"killed by {signal.Signals(-rc).name}"
    return rc, error or last or f"exit status {rc}"


def end(proc):
    """Stop a script this process is leaving, and wait until it has: it holds the run's lock,
    and a script left behind (an orphan SLURM no longer tracks) would keep a resumed job out."""
    proc.terminate()
    proc.send_signal(signal.SIGCONT)      # a stopped (suspended) script takes SIGTERM now
    try:
        proc.wait(timeout=SCRIPT_STOP_S)
    except subprocess.TimeoutExpired:
        pass
    finally:                              # its time is up, or another signal cut the wait short
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def child_env(settings):
    env = dict(os.environ, OMP_NUM_THREADS=str(settings.threads), MKL_NUM_THREADS=str(settings.threads),
               PYTHONUNBUFFERED="1")
    return env


def run_one(run, settings, device, children, commit):
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
            save_json(os.path.join(run.folder, "run.json"), {"split": settings.split, "status": status,
                                                             "error": error, "commit": commit})
            return status, error, 0.0
        action = plan(run, settings.split)
        status, error, test_seconds = "ok", "", None
        for step, cmd in commands(run, settings, device, action):
            t_step = time.time()
            rc, last = execute(cmd, os.path.join(run.folder, f"{step}.log"), child_env(settings),
                               lock_fd, children, action if step == "main" else "test")
            if children.stopping:
                return None, "interrupted", time.time() - t0
            if rc != 0:
                script = next(a for a in cmd if a.endswith(".py"))
                status, error = "failed", f"{os.path.basename(script)}: {last}"
                break
            if step == "test":
                test_seconds = time.time() - t_step
        save_json(os.path.join(run.folder, "run.json"),
                  {"split": settings.split, "status": status, "error": error, "commit": commit,
                   "test_seconds": test_seconds})
        return status, error, time.time() - t0
    finally:
        os.close(lock_fd)


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


def run_all(settings, todo, commit, after_each):
    """The runs, len(settings.slots) at a time, each on a free slot's device; the failed ones."""
    free = queue.Queue()
    for device in settings.slots:
        free.put(device)
    children, progress, failed = Children(), Progress(len(todo), len(settings.slots)), []

    def work(run):
        device = free.get()
        try:
            progress.start(run)
            return run_one(run, settings, device, children, commit)
        finally:
            free.put(device)

    pool = ThreadPoolExecutor(max_workers=len(settings.slots))
    previous = signal.getsignal(signal.SIGTERM) if in_main_thread() else None
    if previous is not None:
        signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        futures = {pool.submit(work, run): run for run in todo}
        for future in as_completed(futures):
            run = futures[future]
            status, error, seconds = future.result()
            ccc = (read_json(run.test_json(settings.split)) or {}).get("ccc", float("nan"))
            progress.finish(run, status, error, seconds, ccc)
            if status != "ok":
                failed.append((run, error))
            after_each()
            if DISK_FULL in error:   # every later run would meet it too; the script's advice
                report = (error.split(NOTHING_HALF_WRITTEN)[0] + NOTHING_HALF_WRITTEN   # is the sweep's
                          if NOTHING_HALF_WRITTEN in error else error)
                raise UserError(f"{run.name} stopped, {report}. {AFTER_FULL_DISK}")
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
