"""reproduce.py --executor slurm against a real SLURM: a single-node cluster (munged, MariaDB,
slurmdbd, slurmctld, slurmd) started for this file's tests by tests/support/slurm_cluster.sh, its `debug`
partition holding this machine's cores (its `urgent` one preempts it, its `short` one has
limits). Each job asks for 1 CPU.

Tested there: a grid through SLURM equals the same grid run locally; a second invocation
submits nothing; a failed job is recorded with its log and error while the others go on; a job
cancelled with scancel is reported and the next invocation submits only it; Ctrl-C leaves the
jobs running; a job that reaches its time limit, or that a job of a higher partition preempts,
is requeued and resumes after its last completed epoch; a suspended job is seen running again
once resumed; a job no node of the partition can run is refused before anything is submitted;
a job array cancelled while pending is seen cancelled (also by Ctrl-C) and submitted again; a
job SLURM never starts as it is is reported, not waited for. Where the cluster cannot be started (not root, packages missing) these tests
are skipped, saying why; CI installs the packages (.ci/run) and runs them as root with
SLURM_TESTS=required, under which a cluster that cannot start fails them instead.
"""
import csv
import dataclasses
import fcntl
import glob
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from support import ROOT

import reproduce  # noqa: E402
from sweep import local as sweep_local  # noqa: E402
from sweep import run as sweep_run  # noqa: E402
from sweep import slurm as sweep_slurm  # noqa: E402
from model import read_checkpoint  # noqa: E402
from sweep.run import Run, plan, trained_epochs  # noqa: E402
from sweep import slurm_fit, slurm_job, slurm_queue  # noqa: E402
from sweep.slurm import ledger_path  # noqa: E402
from utils import TEST_SPLIT, UserError  # noqa: E402

SCRIPT = os.path.join(ROOT, "tests", "support", "slurm_cluster.sh")
DAEMONS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd", "sacct")
PACKAGES = "slurm-wlm munge slurmdbd mariadb-server"
WAIT_S = 300          # the longest any step here waits for SLURM before failing
POLL_S = 0.2          # between two looks at what a step waits for
REQUIRED = "SLURM_TESTS"   # =required (.ci/run sets it): a cluster that cannot start fails, never skips


# --- the cluster -------------------------------------------------------------------------------
def why_no_cluster():
    if os.geteuid() != 0:
        return "starting the single-node SLURM cluster (tests/support/slurm_cluster.sh) needs root"
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    missing = [d for d in DAEMONS if shutil.which(d, path=path) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install -y {PACKAGES})"
    return None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running single-node SLURM for this file's tests, stopped after them; SLURM_CONF points
    SLURM's commands at it."""
    why = why_no_cluster()
    if why and os.environ.get(REQUIRED) == "required":
        pytest.fail(f"{REQUIRED}=required, but the SLURM cluster cannot start: {why}")
    if why:
        pytest.skip(f"SLURM tests skipped: {why}")
    env = dict(os.environ, SLURM_CLUSTER_DIR=str(tmp_path_factory.mktemp("slurm_cluster")))
    previous = signal.signal(signal.SIGTERM, stop_tests)
    try:
        started = subprocess.run(["bash", SCRIPT, "start"], env=env, capture_output=True, text=True,
                                 timeout=WAIT_S)
        assert started.returncode == 0, f"the SLURM cluster did not start:\n{started.stderr}"
        conf = re.search(r"^export SLURM_CONF=(\S+)$", started.stdout, re.M).group(1)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SLURM_CONF", conf)
            mp.setattr(sweep_slurm, "POLL_SECONDS", 1)
            yield conf
    finally:
        stopped = subprocess.run(["bash", SCRIPT, "stop"], env=env, capture_output=True, text=True,
                                 timeout=WAIT_S)
        signal.signal(signal.SIGTERM, previous)
        assert stopped.returncode == 0, stopped.stderr


def stop_tests(signum, frame):
    """SIGTERM (a timeout, a cancelled CI job) ends the tests as Ctrl-C does: the cluster's
    teardown still stops it."""
    raise KeyboardInterrupt


def slurm(*cmd):
    done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr}"
    return done.stdout


def job_field(job_id, key):
    """One KEY=VALUE of `scontrol show job` (JobState, Reason, RunTime, Restarts...)."""
    return re.search(rf"\b{key}=(\S+)", slurm("scontrol", "show", "job", job_id)).group(1)


def wait_until(what, condition, seconds=WAIT_S):
    """Poll `condition` every POLL_S until it holds; a SLURM that never gets there fails the
    test after `seconds` instead of hanging CI (a bound on the wait, not a speed check)."""
    for _ in range(int(seconds / POLL_S)):
        if condition():
            return
        time.sleep(POLL_S)
    if not condition():
        pytest.fail(f"{what}: not seen within {seconds} s")


# --- sweeps ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tiny_corpus, tmp_path_factory):
    base = tmp_path_factory.mktemp("slurm_sweeps")
    return {"corpus": tiny_corpus, "base": base, "cache": str(base / "cache")}


def flags(env, out, *grid):
    c = env["corpus"]
    return list(grid) + ["-emo", "Val", "-batch", "4", "--features", c["features"],
                         "--labels", c["labels"], "--norm-dir", c["norm"],
                         "--cache-dir", env["cache"], "--out", str(out)]


SLURM_FLAGS = ["--executor", "slurm", "--slurm-partition", "debug", "--slurm-cpus-per-run", "1"]


def ledger(out):
    with open(os.path.join(out, "slurm", "jobs.json")) as f:
        return json.load(f)["jobs"]


def results(out):
    with open(os.path.join(out, "results.csv"), newline="") as f:
        return {os.path.basename(r): row for r, row in
                ((f"{row['type']}_K{row['K']}_U{row['unlabel']}_seed{row['seed']}", row) for row in csv.DictReader(f))}


def run_folder(out, mt, seed, unlabel=0, epochs=1):
    return os.path.join(out, "runs", f"{mt}_Val_K4_U{unlabel}_auto_ep{epochs}_b4_seed{seed}")


def checkpoint(folder, mt, k=4, epochs=1):
    return os.path.join(folder, f"TempDeepEmoCluster_epoch{epochs}_batch4_{k}clusters_Val_{mt}.pth.tar")


def main_headers(folder):
    """(action, OMP threads, command) of each main.py reproduce.py started for the run."""
    with open(os.path.join(folder, "main.log")) as f:
        return re.findall(r"^# \S+ \S+ reproduce\.py \((\w+), OMP_NUM_THREADS=(\d+)\): (.*)$",
                          f.read(), re.M)


def read(path):
    with open(path) as f:
        return f.read()


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


# --- a grid on SLURM is the grid run locally -----------------------------------------------------
GRID = ["-mt", "Temp-Triplet,Temp-GRU", "-nc", "4", "-ep", "1", "--seeds", "31,32"]


def test_grid_on_slurm_equals_the_local_grid(cluster, env, capsys):
    """2 types × 1 attribute × 2 seeds of 1-epoch runs, as a 4-job array on SLURM (at most 2 at
    once) and locally with --jobs 2. Each run has 1 thread either way (1 CPU per job; 2 cores
    shared by 2 local jobs), so the two are bit-identical: same CCCs, same checkpoint bytes
    (a different thread count would change the rounding of oneDNN's sums, as
    test_reproduce.test_two_jobs_give_the_results_of_one measures)."""
    local, out = env["base"] / "local", env["base"] / "grid"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reproduce, "usable_cores", lambda: 2)
        assert reproduce.main(flags(env, local, *GRID) + ["--jobs", "2"]) == 0
    command = flags(env, out, *GRID) + SLURM_FLAGS + [
        "--slurm-time", "10", "--slurm-mem", "1", "--slurm-array-parallelism", "2",
        "--slurm-extra", "comment=reproduce-test", "--slurm-extra", "signal_delay_s=60"]
    capsys.readouterr()
    assert reproduce.main(command) == 0
    printed = capsys.readouterr().out
    assert "4 run(s) in the grid: 0 already finished, 0 queued and 0 running on SLURM, 4 to submit" in printed
    assert "4 done, 0 queued, 0 running, 0 failed, 0 cancelled of 4 after" in printed

    a, b = results(local), results(out)
    assert sorted(a) == sorted(b) and len(a) == 4
    for key in a:
        assert b[key]["status"] == "ok" and b[key]["CCC"] == a[key]["CCC"]
        assert b[key]["best_epoch"] == a[key]["best_epoch"] == "1"
    jobs = ledger(out)
    array, = {j["job_id"].split("_")[0] for j in jobs.values()}
    assert sorted(j["job_id"] for j in jobs.values()) == [f"{array}_{i}" for i in range(4)]
    for mt in ("Temp-Triplet", "Temp-GRU"):
        for seed in (31, 32):
            lf, sf = run_folder(local, mt, seed), run_folder(out, mt, seed)
            assert read_bytes(checkpoint(lf, mt)) == read_bytes(checkpoint(sf, mt))
            # the same main.py command line, 1 thread, the run's folder aside
            (la, lt, lc), = main_headers(lf)
            (sa, st, sc), = main_headers(sf)
            assert (la, lt) == (sa, st) == ("train", "1")
            assert lc.replace(str(local), "OUT") == sc.replace(str(out), "OUT")
            record = jobs[os.path.basename(sf)]
            assert (record["state"], record["status"]) == ("COMPLETED", "done")
            assert os.path.realpath(os.path.join(sf, "slurm.log")) == record["log"]
            assert f"{os.path.basename(sf)}: train on cpu with 1 thread(s)" in read(record["log"])
    script = read(next(p for p in (out / "slurm").glob("*/*_submission.sh")))
    for line in ("--partition=debug", "--time=10", "--cpus-per-task=1", "--mem=1GB",
                 "--array=0-3%2", "--comment=reproduce-test", "--signal=USR2@60",
                 f"--chdir={ROOT}"):
        assert f"#SBATCH {line}\n" in script

    # The same command again: everything finished, nothing submitted, nothing changed.
    assert reproduce.main(command) == 0
    printed = capsys.readouterr().out
    assert "4 already finished, 0 queued and 0 running on SLURM, 0 to submit" in printed
    assert ledger(out) == jobs and results(out) == b
    assert reproduce.main(["--report", str(out)]) == 0
    assert "4 done, 0 queued, 0 running, 0 failed, 0 cancelled of 4" in capsys.readouterr().out


def test_failed_job_is_recorded_and_the_others_go_on(cluster, env, tmp_path, capsys):
    """-unlabel 5 from a pool of 5 feature files, one of them damaged (which no check before the
    sweep reads): that job fails, the -unlabel 0 job beside it finishes; exit status 1, the
    failure in the ledger, results.csv and results.md."""
    out, pool = env["base"] / "failing", tmp_path / "unlabelled"
    pool.mkdir()
    for name in sorted(os.listdir(env["corpus"]["features"]))[:4]:
        shutil.copy(os.path.join(env["corpus"]["features"], name), pool / name)
    (pool / "damaged.mat").write_bytes(b"not a MAT file")
    assert reproduce.main(flags(env, out, "-mt", "Temp-Triplet", "-nc", "4", "-ep", "1",
                                "-unlabel", "5,0", "--unlabeled-features", str(pool),
                                "--seeds", "31") + SLURM_FLAGS) == 1
    printed = capsys.readouterr().out
    jobs = ledger(out)
    bad_name = os.path.basename(run_folder(out, "Temp-Triplet", 31, unlabel=5))
    bad, good = jobs[bad_name], jobs[os.path.basename(run_folder(out, "Temp-Triplet", 31))]
    assert (good["state"], good["status"]) == ("COMPLETED", "done")
    assert (bad["state"], bad["status"]) == ("FAILED", "failed")
    assert os.path.isfile(bad["log"]) and len(bad["error"]) == sweep_slurm.ERROR_LINES
    message = f"main.py: error: cannot read features from {pool / 'damaged.mat'}"
    assert any(message in line for line in bad["error"])
    assert f"failed: {bad_name} (job {bad['job_id']}, FAILED); log: {bad['log']}" in printed
    rows = results(out)
    assert rows["Temp-Triplet_K4_U5_seed31"]["status"] == "failed"
    assert rows["Temp-Triplet_K4_U5_seed31"]["error"].startswith(message)
    assert rows["Temp-Triplet_K4_U0_seed31"]["status"] == "ok"
    assert message in (out / "results.md").read_text().split("## Failed runs")[1]


def test_a_job_array_sbatch_refuses_is_one_line(cluster, env, tmp_path):
    out = tmp_path / "refused"
    with pytest.raises(UserError) as err:
        reproduce.main(flags(env, out, "-mt", "Temp-Triplet", "-nc", "4", "--seeds", "31")
                       + SLURM_FLAGS + ["--slurm-partition", "nosuch"])
    assert str(err.value).startswith("sbatch refused the job array: ")
    assert "invalid partition specified: nosuch" in str(err.value).lower()
    assert not os.path.exists(os.path.join(out, "slurm", "jobs.json"))


def job_count():
    """How many jobs SLURM's accounting has ever seen (array tasks not split off count once)."""
    return len(slurm("sacct", "-X", "-n", "-P", "-a", "-o", "JobIDRaw", "-S", "2000-01-01").split())


def node_cpus():
    return int(slurm("sinfo", "--noheader", "--Node", "--partition", "debug", "--format", "%c").split()[0])


def node_mb():
    return int(slurm("sinfo", "--noheader", "--Node", "--partition", "debug", "--format", "%m").split()[0])


@pytest.mark.parametrize("extra, message", [
    ([], "--slurm-cpus-per-run 4: no node of partition debug has more than {cpus} CPUs"),
    (["--slurm-partition", "debug", "--slurm-cpus-per-run", "{twice}"],
     "--slurm-cpus-per-run {twice}: no node of partition debug has more than {cpus} CPUs"),
    (["--slurm-cpus-per-run", "1", "--slurm-mem", "{too_much}"],
     "--slurm-mem {too_much}: no node of partition debug has more than {gb} GB"),
    (["--slurm-cpus-per-run", "1", "--slurm-gpus-per-run", "1"],
     "--slurm-gpus-per-run 1: no node of partition debug has a GPU"),
    (["--slurm-partition", "short", "--slurm-cpus-per-run", "1", "--slurm-time", "6"],
     "--slurm-time 6: partition short allows at most 5 minutes"),
    (["--slurm-partition", "short", "--slurm-cpus-per-run", "2", "--slurm-time", "5"],
     "--slurm-cpus-per-run 2: partition short allows at most 1 CPUs per node"),
    (["--slurm-partition", "short", "--slurm-cpus-per-run", "1", "--slurm-time", "5",
      "--slurm-mem", "1.5"], "--slurm-mem 1.5: partition short allows at most 1 GB per node"),
])
def test_what_no_node_of_the_partition_can_run_is_refused_before_submitting(cluster, env, tmp_path,
                                                                            extra, message):
    """SLURM would accept these jobs and leave them pending for ever (EnforcePartLimits is off):
    one line naming the flag and the largest value the partition allows, nothing submitted.
    The first: reproduce.py's default 4 CPUs per run on the default partition of a 2-CPU node."""
    cpus, mb = node_cpus(), node_mb()
    values = {"cpus": cpus, "twice": 2 * cpus, "too_much": f"{mb / 1024 + 1:g}",
              "gb": f"{math.floor(mb / 1024 * 10) / 10:g}"}
    if cpus >= 4 and not extra:
        pytest.skip(f"the node has {cpus} CPUs: the default 4 CPUs per run fit")
    out = tmp_path / "refused"
    before = job_count()
    with pytest.raises(UserError) as err:
        reproduce.main(flags(env, out, "-mt", "Temp-Triplet", "-nc", "4", "--seeds", "31") +
                       ["--executor", "slurm"] + [e.format(**values) for e in extra])
    assert str(err.value) == message.format(**values)
    assert not os.path.exists(os.path.join(out, "slurm", "jobs.json"))
    assert job_count() == before


# --- cancelled, interrupted, timed out -------------------------------------------------------------
def main_py_pid(folder):
    """The process id of the main.py training the run in `folder` (this machine is the node)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if "main.py" in argv and folder in argv:
            return int(pid)
    return None


class Background:
    """`reproduce.py ARGV` in a subprocess, run as the command line runs it (its Settings then
    reach the jobs pickled by value), polling SLURM every `poll_seconds`; its output collected."""

    def __init__(self, argv, poll_seconds=1):
        code = (f"import runpy, sys, sweep.slurm as sweep_slurm; sweep_slurm.POLL_SECONDS = {poll_seconds}; "
                "sys.argv = ['reproduce.py'] + sys.argv[1:]; "
                "runpy.run_path('reproduce.py', run_name='__main__')")
        self.proc = subprocess.Popen([sys.executable, "-c", code] + argv, cwd=ROOT, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines = []
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self.reader.start()

    def said(self, text):
        return any(text in line for line in list(self.lines))

    def finish(self):
        code = self.proc.wait(timeout=WAIT_S)
        self.reader.join(timeout=WAIT_S)
        return code

    def interrupt(self):
        self.proc.send_signal(signal.SIGINT)
        return self.finish(), "".join(self.lines)


@pytest.fixture
def background():
    """Starts Background sweeps; any still running when the test ends (a failed test) is
    killed, so that none outlives the cluster."""
    started = []

    def start(argv, **kwargs):
        started.append(Background(argv, **kwargs))
        return started[-1]

    yield start
    for sweep in started:
        if sweep.proc.poll() is None:
            sweep.proc.kill()
            sweep.proc.wait()


def test_cancelled_job_is_submitted_again_and_timed_out_job_resumes(cluster, env, background,
                                                                    capsys):
    """Two 2-epoch runs, A and B, as one array; each is paused (SIGSTOP on its main.py) once it
    has completed its first epoch, so that neither can finish before it is acted on.

    A is cancelled (scancel): the waiting reproduce.py reports it. Ctrl-C then stops that
    reproduce.py: B's job keeps running and the message says how to collect it; --report shows
    A cancelled and B in flight.

    B reaches its time limit. slurmctld checks limits every 30 s and sends the warning signal
    (SIGUSR2) signal_delay_s seconds before the limit (submitit's default 90 s); submitit's
    checkpoint then requeues the job. To make SLURM's limit, not this machine's speed, decide
    when that happens, B stays paused and the job's limit is lowered to end 40-100 s later (scontrol update TimeLimit); SLURM then holds the requeued
    job for 2 minutes (its begin time), which the test skips (scontrol update StartTime=now,
    the limit back to 10 minutes). The same command again then submits only A and waits for
    both (started while B still waits for its limit): each resumes after the epochs it had
    completed (main.py --resume) and finishes.
    """
    out = env["base"] / "interrupted"
    command = flags(env, out, "-mt", "Temp-Triplet", "-nc", "4", "-ep", "2", "--seeds", "31,32") + \
        SLURM_FLAGS + ["--slurm-time", "10"]
    a, b = run_folder(out, "Temp-Triplet", 31, epochs=2), run_folder(out, "Temp-Triplet", 32, epochs=2)
    name_a, name_b = os.path.basename(a), os.path.basename(b)
    first = background(command)
    wait_until("the job array", lambda: os.path.isfile(os.path.join(out, "slurm", "jobs.json")))
    jobs = ledger(out)
    job_a, job_b = jobs[name_a]["job_id"], jobs[name_b]["job_id"]

    for folder in (a, b):
        wait_until(f"an epoch of {os.path.basename(folder)} saved", lambda: resumable(folder))
        os.kill(main_py_pid(folder), signal.SIGSTOP)
    slurm("scancel", job_a)
    run_s = seconds(job_field(job_b, "RunTime"))
    slurm("scontrol", "update", f"JobId={job_b}", f"TimeLimit={(run_s + 40) // 60 + 1}")
    wait_until("A reported cancelled", lambda: first.said(f"cancelled {name_a} (job {job_a})"))
    assert resume_epoch(a) == resume_epoch(b) == 1

    code, printed = first.interrupt()
    assert code == 130, printed + sweep_state(out)
    assert f"interrupted: 1 SLURM job(s) keep running ({job_b}); collect them with " \
           f"`{sys.executable} {ROOT}/reproduce.py --report {out}`" in printed
    assert "or run the same reproduce.py command again" in printed
    assert sweep_slurm.status_of(job_field(job_b, "JobState")) in sweep_slurm.IN_FLIGHT   # left to SLURM
    assert reproduce.main(["--report", str(out)]) == 0
    report = capsys.readouterr().out
    assert re.search(r"0 done, [01] queued, [01] running, 0 failed, 1 cancelled of 2", report)
    assert re.search(rf"^(queued|running): {name_b} \(job {job_b}\)$", report, re.M)
    assert f"cancelled: {name_a} (job {job_a}): the same command submits it again" in report

    second = background(command)          # A runs again while B waits for its limit
    wait_until("B requeued", lambda: job_field(job_b, "Reason") == "BeginTime")
    assert job_field(job_b, "Restarts") == "1"
    slurm("scontrol", "update", f"JobId={job_b}", "StartTime=now", "TimeLimit=10")
    code = second.finish()
    printed = "".join(second.lines)
    assert code == 0, printed + sweep_state(out)
    assert re.search(r"2 run\(s\) in the grid: 0 already finished, (1 queued and 0|0 queued and 1) "
                     r"running on SLURM, 1 to submit", printed)
    assert "2 done, 0 queued, 0 running, 0 failed, 0 cancelled of 2 after" in printed
    jobs = ledger(out)
    assert jobs[name_a]["job_id"] != job_a and jobs[name_b]["job_id"] == job_b
    for folder in (a, b):
        headers = main_headers(folder)
        assert [h[0] for h in headers] == ["train", "resume"] and "--resume" in headers[1][2].split()
        log = read(os.path.join(folder, "main.log"))
        assert re.search(r"^resuming \S+ after epoch 1$", log, re.M)
        before, after = log.split("resuming")
        assert "epoch 1/2" in before and "epoch 1/2" not in after and "epoch 2/2" in after
        assert trained_epochs(run_of(folder)) == 2
    assert results(out)["Temp-Triplet_K4_U0_seed31"]["status"] == "ok"
    log_b = read(jobs[name_b]["log"])
    assert "Caught signal SIGUSR2" in log_b and f"Requeued job {job_b}" in log_b


def sweep_state(out):
    """The ledger and the tail of each run's main.log and SLURM log: what a failed assertion
    shows of the sweep."""
    parts = [f"\n--- {ledger_path(out)}\n{read(ledger_path(out))}"]
    for folder in sorted(glob.glob(os.path.join(out, "runs", "*"))):
        for name in ("main.log", "slurm.log"):
            path = os.path.join(folder, name)
            if os.path.exists(path):
                parts.append(f"--- {path} (last lines)\n" + "".join(read(path).splitlines(True)[-25:]))
    return "\n".join(parts)


def test_a_preempted_job_is_requeued_and_resumes(cluster, env, background):
    """A 2-epoch run on `debug`, paused (SIGSTOP on its main.py) once its first epoch is saved;
    a job of the partition `urgent` that asks for every CPU of the node preempts it. SLURM sends
    it its warning signal (preempt_send_user_signal), submitit's checkpoint requeues it (held 2
    minutes, which the test skips), and it resumes after its completed epoch: the sweep waiting
    for it ends with it done. 30-minute jobs, so that submitit tells a preemption from a time
    limit (a signal within min(0.8 × limit, limit − 10 min) of the start is a preemption)."""
    out = env["base"] / "preempted"
    command = flags(env, out, "-mt", "Temp-Triplet", "-nc", "4", "-ep", "2", "--seeds", "33") + \
        SLURM_FLAGS + ["--slurm-time", "30"]
    folder = run_folder(out, "Temp-Triplet", 33, epochs=2)
    sweep = background(command)
    wait_until("the job", lambda: os.path.isfile(os.path.join(out, "slurm", "jobs.json")))
    job = ledger(out)[os.path.basename(folder)]["job_id"]
    wait_until("an epoch saved", lambda: resumable(folder))
    os.kill(main_py_pid(folder), signal.SIGSTOP)
    cpus = slurm("sinfo", "--noheader", "--Node", "--format", "%c").split()[0]
    slurm("sbatch", "--parsable", "--partition", "urgent", "--cpus-per-task", cpus,
          "--output", "/dev/null", "--wrap", "sleep 2")
    wait_until("the job requeued", lambda: job_field(job, "Reason") == "BeginTime")
    assert job_field(job, "Restarts") == "1"
    slurm("scontrol", "update", f"JobId={job}", "StartTime=now")
    code = sweep.finish()
    printed = "".join(sweep.lines)
    assert code == 0, printed + sweep_state(out)
    assert "1 done, 0 queued, 0 running, 0 failed, 0 cancelled of 1 after" in printed
    headers = main_headers(folder)
    assert [h[0] for h in headers] == ["train", "resume"] and "--resume" in headers[1][2].split()
    assert re.search(r"^resuming \S+ after epoch 1$", read(os.path.join(folder, "main.log")), re.M)
    log = read(ledger(out)[os.path.basename(folder)]["log"])
    assert "Caught signal SIGUSR2" in log and "this job is preempted" in log
    assert f"Requeued job {job}" in log
    assert results(out)["Temp-Triplet_K4_U0_seed33"]["status"] == "ok"


# --- pending: a job array cancelled before it started, a job SLURM never starts ---------------------
@pytest.fixture
def busy_node(cluster):
    """A job holding every CPU of the node, so that the sweep's jobs stay pending; cancelled
    by the test (call the fixture's value) or at its end."""
    job = slurm("sbatch", "--parsable", "--partition", "debug", "--cpus-per-task", str(node_cpus()),
                "--output", "/dev/null", "--wrap", "sleep 900").strip()
    wait_until(f"job {job} running", lambda: job_field(job, "JobState") == "RUNNING")
    yield lambda: slurm("scancel", job)
    subprocess.run(["scancel", job], capture_output=True, timeout=60)


def pending(job_id):
    return job_field(job_id, "JobState") == "PENDING"


def accounted_as(array, state):
    """Whether SLURM's accounting records the whole of job `array` (not one task) in `state`."""
    records = slurm("sacct", "-X", "-n", "-P", "-o", "State", "-j", array).splitlines()
    return [record.split(" ")[0] for record in records] == [state]      # "CANCELLED by 0"


def test_a_job_array_cancelled_while_pending_is_seen_cancelled_and_submitted_again(cluster, env,
                                                                                  background,
                                                                                  busy_node,
                                                                                  capsys):
    """While another job holds the node, a 2-run sweep's job array stays pending; scancel of the
    array (the usual way to stop a queued sweep) leaves one accounting record, the array's own
    (`19_[0-1%2]`, or `19` alone on some clusters), CANCELLED. The waiting sweep sees both runs
    cancelled. The next invocation submits both again; cancelled the same way while it sleeps
    between two looks, its Ctrl-C says that no job keeps running (none does) and records the
    runs cancelled. Once the node is free, the same command submits both again and they finish."""
    out = env["base"] / "cancelled_pending"
    command = flags(env, out, "-mt", "Temp-Triplet", "-nc", "4", "-ep", "1", "--seeds", "41,42") + \
        SLURM_FLAGS + ["--slurm-time", "10"]
    names = [os.path.basename(run_folder(out, "Temp-Triplet", seed)) for seed in (41, 42)]

    first = background(command)
    wait_until("the job array", lambda: os.path.isfile(ledger_path(out)))
    ids = [ledger(out)[name]["job_id"] for name in names]
    array = slurm_queue.array_of(ids[0])
    assert pending(ids[0]) and pending(ids[1])
    slurm("scancel", array)
    assert first.finish() == 1
    printed = "".join(first.lines)
    for name, job in zip(names, ids):
        assert f"cancelled {name} (job {job}): the same command submits it again" in printed
        assert (ledger(out)[name]["state"], ledger(out)[name]["status"]) == ("CANCELLED", "cancelled")
    assert "0 done, 0 queued, 0 running, 0 failed, 2 cancelled of 2 after" in printed

    second = background(command, poll_seconds=3600)    # its first look comes after the Ctrl-C
    wait_until("the array submitted again", lambda: second.said("submitted 2 job(s)"))
    assert "2 run(s) in the grid: 0 already finished, 0 queued and 0 running on SLURM, 2 to submit" \
        in "".join(second.lines)
    again = [ledger(out)[name]["job_id"] for name in names]
    assert set(again).isdisjoint(ids) and pending(again[0])
    slurm("scancel", slurm_queue.array_of(again[0]))
    wait_until("the array cancelled in accounting",
               lambda: accounted_as(slurm_queue.array_of(again[0]), "CANCELLED"))
    code, printed = second.interrupt()
    assert code == 130, printed
    assert "keep running" not in printed
    assert ("interrupted: no SLURM job of this sweep is queued or running (0 done, 0 queued, "
            "0 running, 0 failed, 2 cancelled of 2); the same command submits what is left") in printed
    assert [ledger(out)[name]["status"] for name in names] == ["cancelled", "cancelled"]

    busy_node()
    capsys.readouterr()
    assert reproduce.main(command) == 0
    printed = capsys.readouterr().out
    assert "2 run(s) in the grid: 0 already finished, 0 queued and 0 running on SLURM, 2 to submit" in printed
    assert "2 done, 0 queued, 0 running, 0 failed, 0 cancelled of 2 after" in printed
    assert all(results(out)[f"Temp-Triplet_K4_U0_seed{seed}"]["status"] == "ok" for seed in (41, 42))


def test_a_job_slurm_never_starts_is_reported_not_waited_for(cluster, env, background, busy_node,
                                                            capsys):
    """A 2-run job array pending behind another job is changed (scontrol update) to ask for more
    CPUs than the node has: SLURM keeps it pending with reason PartitionConfig, which no wait
    resolves. The sweep says so, one line per run, and exits 1, leaving the jobs for the user to
    cancel or change; --report shows the reason."""
    out = env["base"] / "stuck"
    command = flags(env, out, "-mt", "Temp-Triplet", "-nc", "4", "-ep", "1", "--seeds", "51,52") + \
        SLURM_FLAGS + ["--slurm-time", "10"]
    names = [os.path.basename(run_folder(out, "Temp-Triplet", seed)) for seed in (51, 52)]
    sweep = background(command)
    wait_until("the job array", lambda: os.path.isfile(ledger_path(out)))
    ids = [ledger(out)[name]["job_id"] for name in names]
    array = slurm_queue.array_of(ids[0])
    try:
        wait_until("the array waiting for the node", lambda: job_field(ids[0], "Reason") in ("Resources", "Priority"))
        # SLURM 22.05 applies the change, then answers 1: "Requested partition configuration not available now"
        subprocess.run(["scontrol", "update", f"JobId={array}", f"NumCPUs={2 * node_cpus()}"],
                       capture_output=True, timeout=60)
        code = sweep.finish()
        printed = "".join(sweep.lines)
        assert code == 1, printed
        for name, job in zip(names, ids):
            assert f"stuck: {name} (job {job}) pending: PartitionConfig: SLURM never starts it as it is" \
                in printed
            assert pending(job)                       # left to the user
        assert f"2 job(s) left pending for you to cancel (scancel {ids[0]} {ids[1]}; then" in printed
        assert reproduce.main(["--report", str(out)]) == 0
        report = capsys.readouterr().out
        for name, job in zip(names, ids):
            assert f"queued: {name} (job {job})\n    pending: PartitionConfig: SLURM never starts it " \
                   "as it is; cancel or change it\n" in report
    finally:
        slurm("scancel", array)


def run_of(folder):
    """The 2-epoch Temp-Triplet K = 4 run in `folder` (its seed names no file)."""
    return Run("Temp-Triplet", "Val", 4, 0, "auto", 0, 2, 4, folder)


def resumable(folder):
    """An epoch completed and its resume state saved: what main.py --resume continues from."""
    return plan(run_of(folder), TEST_SPLIT) == "resume"


def resume_epoch(folder):
    return read_checkpoint(run_of(folder).files.resume)["epoch"]


def seconds(run_time):
    """SLURM's [D-]HH:MM:SS or MM:SS in seconds."""
    days, _, clock = run_time.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    return int(days or 0) * 86400 + sum(p * 60 ** i for i, p in enumerate(reversed(parts)))


def test_a_job_suspended_then_resumed_is_seen_running_again(cluster):
    """Each look at the jobs asks SLURM afresh (submitit's shared watcher takes a SUSPENDED job
    for ended and stops asking about it, so that a cached state would stay SUSPENDED)."""
    job = slurm("sbatch", "--parsable", "--partition", "debug", "--cpus-per-task", "1",
                "--output", "/dev/null", "--wrap", "sleep 300").strip()
    try:
        for action, state in ((None, "RUNNING"), ("suspend", "SUSPENDED"), ("resume", "RUNNING")):
            if action:
                slurm("scontrol", action, job)
            wait_until(f"job {job} {state}", lambda: slurm_queue.job_states([job]).get(job) == state,
                       seconds=60)
            assert sweep_slurm.status_of(state) == "running"
    finally:
        slurm("scancel", job)


# --- SLURM's answers read -------------------------------------------------------------------------
def test_an_arrays_own_record_gives_the_state_of_every_task_it_covers():
    """sacct -X lines as SLURM writes them: a task's own record first, then the record of its
    array that covers it, written with the tasks it still covers or as the array's id alone."""
    read = slurm_queue.states_from_sacct
    tasks = ["19_0", "19_1", "19_2", "19_3"]
    assert read(["19|CANCELLED by 0"], tasks) == dict.fromkeys(tasks, "CANCELLED")
    assert read(["19_[0-3%2]|CANCELLED by 0"], tasks) == dict.fromkeys(tasks, "CANCELLED")
    assert read(["19_0|COMPLETED", "19_1|RUNNING", "19_[2-3%2]|PENDING"], tasks) == {
        "19_0": "COMPLETED", "19_1": "RUNNING", "19_2": "PENDING", "19_3": "PENDING"}
    assert read(["19_0|COMPLETED", "19|CANCELLED by 0"], tasks) == {
        "19_0": "COMPLETED", "19_1": "CANCELLED", "19_2": "CANCELLED", "19_3": "CANCELLED"}
    assert read(["19_[1,3]|PENDING"], tasks) == {"19_1": "PENDING", "19_3": "PENDING"}
    assert read(["20|TIMEOUT", "21_[0%1]|PENDING"], ["20", "21_0", "22"]) == {
        "20": "TIMEOUT", "21_0": "PENDING"}            # 22: not in accounting yet
    assert read([], tasks) == {}


@pytest.mark.parametrize("reason, never", [
    ("PartitionConfig", True), ("PartitionTimeLimit", True), ("InvalidAccount", True),
    ("ReqNodeNotAvail, UnavailableNodes:node[1-2]", True), ("QOSMaxCpuPerJobLimit", True),
    ("AssocMaxWallDurationPerJobLimit", True), ("QOSMaxMemoryPerJob", True),
    ("Resources", False), ("Priority", False), ("JobArrayTaskLimit", False), ("BeginTime", False),
    ("QOSMaxJobsPerUserLimit", False), ("AssocMaxJobsLimit", False), ("", False),
])
def test_pending_reasons_no_wait_resolves(reason, never):
    """Per-job limits never resolve; per-user and per-account ones do as other jobs end."""
    assert slurm_queue.cannot_resolve(reason) is never


NODE_LINE = ("NodeName=gpu{i} Arch=x86_64 CoresPerSocket=16 CPUAlloc=0 CPUEfctv={cpus} CPUTot=32 "
             "Gres={gres} RealMemory={mb} AllocMem=0 MemSpecLimit=2048 State=IDLE "
             "Partitions={parts}")


def partition_of(lines, name="gpu"):
    """slurm_fit's Partition from `scontrol show partition` and `node` lines."""
    f = slurm_fit.fields(lines[0])
    nodes = tuple(slurm_fit.node_from(slurm_fit.fields(n)) for n in lines[1:])
    return slurm_fit.Partition(name, slurm_fit.minutes(f["MaxTime"]), slurm_fit.limit(f["MaxCPUsPerNode"]),
                               slurm_fit.limit(f.get("MaxMemPerNode")), nodes)


def test_a_request_is_checked_against_the_nodes_and_limits_scontrol_shows():
    """A partition of two GPU nodes (a 4-GPU one with 30 CPUs free of the system's, a 2-GPU one
    with 62), each keeping 2 GB for the system, and a 1-day limit."""
    part = ("PartitionName=gpu AllowGroups=ALL Default=NO MaxNodes=UNLIMITED MaxTime=1-00:00:00 "
            "MaxCPUsPerNode=UNLIMITED Nodes=gpu[1-2] State=UP TotalCPUs=96 MaxMemPerNode=UNLIMITED")
    lines = [part,
             NODE_LINE.format(i=1, cpus=30, gres="gpu:a100:4(S:0-1)", mb=256000, parts="gpu,all"),
             NODE_LINE.format(i=2, cpus=62, gres="gpu:v100:2(S:0),shard:8", mb=512000, parts="gpu")]
    p = partition_of(lines)
    assert p.max_minutes == 1440 and [(n.cpus, n.mem_mb, n.gpus) for n in p.nodes] == [
        (30, 253952, 4), (62, 509952, 2)]
    o = slurm_job.SlurmOptions(partition="gpu", minutes=60, cpus=8, mem_gb=64, gpus=1,
                               parallelism=None, extra=())
    assert slurm_fit.refusal(o, p) is None
    for change, message in [
        (dict(minutes=1500), "--slurm-time 1500: partition gpu allows at most 1440 minutes"),
        (dict(cpus=64), "--slurm-cpus-per-run 64: no node of partition gpu has more than 62 CPUs"),
        (dict(mem_gb=600), "--slurm-mem 600: no node of partition gpu has more than 498 GB"),
        (dict(gpus=8), "--slurm-gpus-per-run 8: no node of partition gpu has more than 4 GPUs"),
        (dict(cpus=32, gpus=4), "--slurm-cpus-per-run 32, --slurm-mem 64, --slurm-gpus-per-run 4: "
         "no node of partition gpu has them all at once; its nodes offer 62 CPUs, 498 GB, 2 GPUs; "
         "30 CPUs, 248 GB, 4 GPUs"),
    ]:
        assert slurm_fit.refusal(dataclasses.replace(o, **change), p) == message
    assert slurm_fit.gpu_count("(null)") == 0


# --- refused before anything is submitted ------------------------------------------------------------
@pytest.mark.parametrize("extra, message", [
    (["--slurm-gpus-per-run", "8"], "-batch 4 is smaller than the 8 processes of this run"),
    (["--slurm-extra", "account"], "--slurm-extra 'account': give KEY=VALUE"),
    (["--slurm-extra", "time=5"], "--slurm-extra time: set it with --slurm-time"),
    (["--slurm-extra", "chdir=/tmp"], "--slurm-extra chdir: reproduce.py sets this one itself"),
    (["--slurm-mem", "0"], "--slurm-mem must be a positive number of GB, got 0"),
])
def test_bad_slurm_flags_are_refused(env, tmp_path, extra, message):
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        reproduce.main(flags(env, out, "-mt", "Temp-Triplet") + ["--executor", "slurm"] + extra)
    assert message in str(err.value)
    assert not out.exists()


@pytest.mark.parametrize("argv, message", [
    (["--slurm-time", "5"], "--slurm-time: for --executor slurm only"),
    (["--executor", "slurm", "--jobs", "2"], "--jobs and --devices are for --executor local"),
    (["--executor", "slurm", "--slurm-time", "0"], "--slurm-time must be at least 1, got 0"),
])
def test_slurm_flags_that_do_not_fit_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main(argv + ["--out", "x"])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("gpus", ["0", "1"])
def test_without_slurm_it_says_so(env, tmp_path, monkeypatch, gpus):
    """No SLURM commands on PATH: one clear line, nothing submitted. The checks before it
    passed, also with a GPU per run on a machine without one: the GPUs are the nodes'."""
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError) as err:
        reproduce.main(flags(env, tmp_path / "out", "-mt", "Temp-Triplet") +
                       ["--executor", "slurm", "--slurm-gpus-per-run", gpus])
    assert "--executor slurm: cannot run SLURM's sacct" in str(err.value)


# --- several GPUs per run: main.py under torchrun --------------------------------------------------
def test_several_gpus_per_run_train_under_torchrun(env, tmp_path):
    """--slurm-gpus-per-run 2: each job's main.py runs under torchrun over 2 processes (one
    per GPU of the job), its CPUs split between them; online_testing.py stays one process.
    The same command lines run here on the CPU (gloo) bring the run to 'done'."""
    out = tmp_path / "out"
    argv = flags(env, out, "-mt", "Temp-Triplet", "-nc", "4", "-ep", "1", "--seeds", "31")
    s = reproduce.settings_from_args(reproduce.parse_args(
        argv + ["--executor", "slurm", "--slurm-gpus-per-run", "2", "--slurm-cpus-per-run", "4"]))
    assert (s.processes, s.threads, s.slots) == (2, 2, ("cuda",))
    run = reproduce.grid(s)[0]
    (_, train), (_, test) = sweep_run.commands(run, s, "cuda", "train")
    assert train[:train.index("main.py") + 1] == [sys.executable, "-m", "torch.distributed.run",
                                                  "--standalone", "--nproc_per_node", "2", "main.py"]
    assert test[:2] == [sys.executable, "online_testing.py"]

    here = dataclasses.replace(s, slots=("cpu",), slurm=None)
    status, error, _ = sweep_local.run_one(run, here, "cpu", sweep_local.Children(), "")
    assert (status, error) == ("ok", "")
    with open(os.path.join(run.folder, "main.log")) as f:
        log = f.read()
    assert "OMP_NUM_THREADS=2): " + " ".join(train[:7]) in log
    assert "on 2 processes (gloo, cpu" in log
    assert re.fullmatch(r"cpu \((bf16|fp32)\) x 2 processes", sweep_run.trained_device(run))
    assert read_checkpoint(run.files.checkpoint)["arch"]
    assert plan(run, TEST_SPLIT) == "done"


def test_a_failed_script_is_recorded_by_its_error_line_not_a_launcher_report(tmp_path):
    """torchrun prints its own failure report after the script's 'error: ' line; the run's
    error is the script's line. A job whose log is empty says so."""
    script = ("import sys; print('error: -nc 4 needs more turns', file=sys.stderr); "
              "print('=' * 20, file=sys.stderr); print('ChildFailedError', file=sys.stderr); sys.exit(1)")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rc, last = sweep_local.execute([sys.executable, "-c", script], str(tmp_path / "main.log"), env,
                                   os.open(str(tmp_path), os.O_RDONLY), sweep_local.Children(), "train")
    assert (rc, last) == (1, "error: -nc 4 needs more turns")
    rc, last = sweep_local.execute([sys.executable, "-c", "import sys; print('x', file=sys.stderr); sys.exit(3)"],
                                   str(tmp_path / "other.log"), env, os.open(str(tmp_path), os.O_RDONLY),
                                   sweep_local.Children(), "train")
    assert (rc, last) == (3, "x")
    (tmp_path / "empty.log").write_text("")
    assert sweep_slurm.log_tail(str(tmp_path / "empty.log")) == [f"(empty log: {tmp_path / 'empty.log'})"]


def test_a_job_leaving_for_a_requeue_ends_its_script_and_frees_the_run(tmp_path):
    """After requeuing a job, submitit leaves it by sys.exit from its SIGUSR2 handler, wherever
    the job was. The script the job is running (here a stopped one, as the test above pauses
    main.py) ends with it, so that no orphan SLURM no longer tracks keeps the run's lock from
    the requeued job."""
    lock = str(tmp_path / ".lock")
    lock_fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    script = "import os, signal, time; os.kill(os.getpid(), signal.SIGSTOP); time.sleep(300)"
    children, seen, failed = sweep_local.Children(), [], []

    def requeue_when_stopped():
        try:
            wait_until("the script stopped", lambda: children.procs and
                       read(f"/proc/{next(iter(children.procs)).pid}/stat").split(") ")[1][0] == "T",
                       seconds=60)
            seen.extend(children.procs)
        except BaseException as err:
            failed.append(err)
        finally:
            os.kill(os.getpid(), signal.SIGUSR2)     # the job leaves in any case: no hang

    def leave(signum, frame):
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, leave)
    helper = threading.Thread(target=requeue_when_stopped)
    try:
        helper.start()
        with pytest.raises(SystemExit):
            sweep_local.execute([sys.executable, "-c", script], str(tmp_path / "main.log"),
                                dict(os.environ, OMP_NUM_THREADS="1"), lock_fd, children, "train")
    finally:
        helper.join()
        signal.signal(signal.SIGUSR2, previous)
    assert not failed, failed
    (script_proc,) = seen
    assert script_proc.returncode == -signal.SIGTERM        # ended by SIGTERM (and SIGCONT), not killed
    os.close(lock_fd)
    again = os.open(lock, os.O_RDWR)
    fcntl.flock(again, fcntl.LOCK_EX | fcntl.LOCK_NB)      # BlockingIOError if the script lived on
    os.close(again)
    assert not children.procs
