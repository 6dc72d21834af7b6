"""reproduce.py: the report against a hand computation, a restarted sweep, two jobs at once,
a failing run, bad input.

Sweeps call reproduce.main(argv) in this process (each run is still main.py and
online_testing.py as subprocesses) on the tiny corpus with -mt Temp-Triplet -emo Val
-nc 4 -ep 1 -batch 4; the whole file trains about eight one-epoch runs. The core count is
fixed at 2 (reproduce.usable_cores patched) so that the threads per run do not depend on
the machine: one job gets 2 threads, each of two jobs 1.
"""
import csv
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats

from support import ROOT

import reproduce  # noqa: E402
from utils import UserError  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# --- helpers ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env(tiny_corpus, tmp_path_factory):
    base = tmp_path_factory.mktemp("reproduce")
    return {"corpus": tiny_corpus, "base": base, "cache": str(base / "cache")}


def flags(env, out, seeds="31,32"):
    c = env["corpus"]
    return ["-mt", "Temp-Triplet", "-emo", "Val", "-nc", "4", "-ep", "1", "-batch", "4",
            "--seeds", seeds, "--features", c["features"], "--labels", c["labels"],
            "--norm-dir", c["norm"], "--cache-dir", env["cache"], "--out", str(out)]


def sweep(env, out, *extra, seeds="31,32", cores=2):
    """reproduce.main on the tiny grid, as if the machine had `cores` cores."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(reproduce, "usable_cores", lambda: cores)
        return reproduce.main(flags(env, out, seeds) + list(extra))


def results(out):
    """results.csv as {(unlabel, seed): row}."""
    with open(os.path.join(out, "results.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(reproduce.COLUMNS)
    return {(int(r["unlabel"]), int(r["seed"])): r for r in rows}


def run_dir(out, seed, unlabel=0, epochs=1):
    return os.path.join(out, "runs", f"Temp-Triplet_Val_K4_U{unlabel}_auto_ep{epochs}_b4_seed{seed}")


def attempts(folder, step):
    """The header reproduce.py writes into main.log/test.log before each script it runs:
    [(action, OMP threads, command)]."""
    path = os.path.join(folder, f"{step}.log")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return re.findall(r"^# \S+ \S+ reproduce\.py \((\w+), OMP_NUM_THREADS=(\d+)\): (.*)$",
                          f.read(), re.M)


def stem(folder, epochs=1):
    return os.path.join(folder, f"TempDeepEmoCluster_epoch{epochs}_batch4_4clusters_Val_Temp-Triplet")


@pytest.fixture(scope="module")
def one_job(env):
    """Seeds 31 and 32, one run at a time (2 threads)."""
    out = env["base"] / "one_job"
    assert sweep(env, out) == 0
    return out


# --- the report --------------------------------------------------------------------------------
FIXED = [
    # type, attribute, K, unlabel, precision, seed, CCC (status ok unless given)
    ("Temp-CNN", "Val", 10, 0, "auto", 31, 0.3012),
    ("Temp-CNN", "Val", 10, 0, "auto", 32, 0.3547),
    ("Temp-CNN", "Val", 10, 0, "auto", 33, 0.2795),
    ("Temp-Triplet", "Val", 10, 0, "auto", 31, 0.3311),
    ("Temp-Triplet", "Val", 10, 0, "auto", 32, 0.3622),
    ("Temp-Triplet", "Val", 10, 0, "auto", 33, 0.3394),
    ("Temp-Triplet", "Val", 10, 0, "fp32", 31, 0.3127),
    ("Temp-Triplet", "Val", 10, 0, "fp32", 32, 0.3718),
    ("Temp-Triplet", "Val", 10, 0, "fp32", 33, 0.2999),
    # the same CCCs as unlabel 0: all paired differences are zero
    ("Temp-CNN", "Val", 10, 100, "auto", 31, 0.3012),
    ("Temp-CNN", "Val", 10, 100, "auto", 32, 0.3547),
    ("Temp-CNN", "Val", 10, 100, "auto", 33, 0.2795),
    ("Temp-CNN", "Act", 10, 0, "auto", 31, 0.8021),
    ("Temp-CNN", "Act", 10, 0, "auto", 32, 0.8234),
    ("Temp-Triplet", "Act", 10, 0, "auto", 31, 0.8105),
    ("Temp-Triplet", "Act", 10, 0, "auto", 32, 0.8466),
    ("Temp-Triplet", "Act", 10, 0, "auto", 33, None),      # failed
]


def write_fixed_csv(folder):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "results.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=reproduce.COLUMNS)
        w.writeheader()
        for mt, emo, k, n, prec, seed, ccc in FIXED:
            w.writerow({"type": mt, "attribute": emo, "K": k, "unlabel": n, "seed": seed,
                        "epochs": 30, "batch": 64, "split": "Test1",
                        "CCC": "" if ccc is None else ccc, "best_epoch": "" if ccc is None else 12,
                        "seconds": 100.0, "precision": prec, "device": "cuda:0 (bf16)",
                        "commit": "abc1234", "status": "failed" if ccc is None else "ok",
                        "error": "main.py: error: CUDA out of memory" if ccc is None else ""})


def values(mt, emo, n, prec):
    return [c for t, e, _, u, p, _, c in FIXED if (t, e, u, p) == (mt, emo, n, prec) and c is not None]


def hand_cell(v):
    n = len(v)
    mean = sum(v) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    return f"{mean:.4f} ± {sd:.4f} (n = {n})"


def hand_t_p(d):
    """Two-sided paired t-test p by the formula: t = mean / (sd / √n), n − 1 dof."""
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    return 2 * scipy.stats.t.sf(abs(mean / (sd / math.sqrt(n))), n - 1)


def hand_wilcoxon_p(d):
    """Exact two-sided signed-rank p by enumerating every sign pattern (distinct |d|, no 0)."""
    ranks = scipy.stats.rankdata(np.abs(d))
    observed = sum(r for r, x in zip(ranks, d) if x > 0)
    stats = [sum(r for r, s in zip(ranks, signs) if s) for signs in
             itertools.product((0, 1), repeat=len(d))]
    low = sum(s <= observed for s in stats) / len(stats)
    high = sum(s >= observed for s in stats) / len(stats)
    return min(1.0, 2 * min(low, high))


def table_rows(md, heading):
    """{type: [Act, Dom, Val cells]} of the table under `## heading`."""
    block = md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    out = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| Temp-"):
            out[cells[0]] = cells[1:]
    return out


def comparison(md, emo, factor, pair, at):
    section = md.split(f"### {emo} ", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[:3] == [factor, pair, at]:
            return cells[3:]
    raise AssertionError(f"no {factor} {pair} at {at} in:\n{section}")


def test_report_equals_hand_computation(tmp_path):
    write_fixed_csv(tmp_path)
    assert reproduce.main(["--report", str(tmp_path)]) == 0
    md = (tmp_path / "results.md").read_text()
    assert "sample standard deviation (ddof = 1)" in md
    assert "scipy.stats.ttest_rel" in md and "scipy.stats.wilcoxon" in md

    # Tables: one per K/unlabel/precision/epochs (batch, split) combination.
    ctx = "K = 10, unlabel {}, precision {}, epochs 30, batch 64, Test1"
    auto = table_rows(md, ctx.format(0, "auto"))
    assert auto["Temp-CNN"] == [hand_cell(values("Temp-CNN", "Act", 0, "auto")), "—",
                                hand_cell(values("Temp-CNN", "Val", 0, "auto"))]
    # The failed seed 33 is left out: n = 2.
    assert auto["Temp-Triplet"] == [hand_cell(values("Temp-Triplet", "Act", 0, "auto")), "—",
                                    hand_cell(values("Temp-Triplet", "Val", 0, "auto"))]
    assert "(n = 2)" in auto["Temp-Triplet"][0]
    fp32 = table_rows(md, ctx.format(0, "fp32"))
    assert fp32 == {"Temp-Triplet": ["—", "—", hand_cell(values("Temp-Triplet", "Val", 0, "fp32"))]}
    assert table_rows(md, ctx.format(100, "auto"))["Temp-CNN"][2] == \
        hand_cell(values("Temp-CNN", "Val", 100, "auto"))

    # Paired tests over seeds 31–33, recomputed by formula and by enumeration.
    checks = [(("temporal type", "Temp-CNN − Temp-Triplet",
                "K = 10, unlabel 0, precision auto, epochs 30, batch 64, Test1"),
               values("Temp-CNN", "Val", 0, "auto"), values("Temp-Triplet", "Val", 0, "auto")),
              (("precision", "auto − fp32", "Temp-Triplet, K = 10, unlabel 0, epochs 30, batch 64, Test1"),
               values("Temp-Triplet", "Val", 0, "auto"), values("Temp-Triplet", "Val", 0, "fp32"))]
    for (factor, pair, where), a, b in checks:
        n, diff, t_p, w_p = comparison(md, "Val", factor, pair, where)
        d = [x - y for x, y in zip(a, b)]
        assert n == "3"
        assert float(diff) == pytest.approx(sum(d) / 3, abs=5e-5)
        assert float(t_p) == pytest.approx(hand_t_p(d), rel=1e-3)
        assert w_p == f"{hand_wilcoxon_p(d):.4g} (exact)"
    # All differences zero: both tests say why they give no p-value.
    n, diff, t_p, w_p = comparison(md, "Val", "unlabel", "0 − 100",
                                   "Temp-CNN, K = 10, precision auto, epochs 30, batch 64, Test1")
    assert (n, diff) == ("3", "+0.0000")
    assert t_p == "undefined (all differences equal)"
    assert w_p == "undefined (all differences zero)"
    # Two paired seeds (Act: seed 33 failed): no test.
    n, diff, t_p, w_p = comparison(md, "Act", "temporal type", "Temp-CNN − Temp-Triplet",
                                   "K = 10, unlabel 0, precision auto, epochs 30, batch 64, Test1")
    assert n == "2"
    assert float(diff) == pytest.approx(((0.8021 - 0.8105) + (0.8234 - 0.8466)) / 2, abs=5e-5)
    assert t_p == w_p == "no test possible (2 paired seed(s), at least 3 needed)"
    assert "CUDA out of memory" in md.split("## Failed runs", 1)[1]
    assert "| K |" not in md    # K does not vary: no K comparison

    with open(tmp_path / "results.png", "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    # Rebuilding from the same results.csv gives the same file.
    assert reproduce.main(["--report", str(tmp_path)]) == 0
    assert (tmp_path / "results.md").read_text() == md


def test_report_without_results_is_refused(tmp_path):
    with pytest.raises(UserError, match="results.csv not found"):
        reproduce.main(["--report", str(tmp_path)])


# --- sweeps ---------------------------------------------------------------------------------------
def test_sweep_outputs(one_job):
    rows = results(one_job)
    assert sorted(rows) == [(0, 31), (0, 32)]
    for (_, seed), row in rows.items():
        folder = run_dir(one_job, seed)
        with open(os.path.join(folder, "test_Test1.json")) as f:
            assert float(row["CCC"]) == json.load(f)["ccc"]
        assert row["status"] == "ok" and row["error"] == ""
        assert (row["type"], row["attribute"], row["K"], row["epochs"], row["batch"]) == \
            ("Temp-Triplet", "Val", "4", "1", "4")
        assert row["best_epoch"] == "1" and row["device"].startswith("cpu (")
        assert float(row["seconds"]) > 0
        assert [a[:2] for a in attempts(folder, "main")] == [("train", "2")]
        assert len(attempts(folder, "test")) == 1
        assert os.path.isfile(stem(folder) + ".pth.tar")
    md = (one_job / "results.md").read_text()
    assert "| Temp-Triplet | — | — | " in md and "(n = 2) |" in md
    with open(one_job / "results.png", "rb") as f:
        assert f.read(8) == PNG_SIGNATURE


def test_restart_runs_only_what_is_missing(env, one_job, capsys):
    """A killed sweep, simulated by the states a kill leaves, restarted with the same command."""
    out = env["base"] / "restart"
    shutil.copytree(one_job, out)
    # Seed 31 finished. Seed 32 was killed while testing: its test result is missing.
    os.remove(os.path.join(run_dir(out, 32), "test_Test1.json"))
    # Seed 33 was killed inside epoch 1's saving: a checkpoint, no resume state, no history.
    os.makedirs(run_dir(out, 33))
    shutil.copy(stem(run_dir(out, 31)) + ".pth.tar", stem(run_dir(out, 33)) + ".pth.tar")
    before = {s: (attempts(run_dir(out, s), "main"), attempts(run_dir(out, s), "test")) for s in (31, 32)}
    capsys.readouterr()

    assert sweep(env, out, seeds="31,32,33") == 0
    assert "3 run(s) in the grid: 1 already finished, 2 to run" in capsys.readouterr().out
    # Seed 31: nothing ran.
    assert (attempts(run_dir(out, 31), "main"), attempts(run_dir(out, 31), "test")) == before[31]
    # Seed 32: only online_testing.py.
    assert attempts(run_dir(out, 32), "main") == before[32][0]
    assert len(attempts(run_dir(out, 32), "test")) == len(before[32][1]) + 1
    # Seed 33: trained again over the stale checkpoint (--overwrite), then tested.
    action, _, cmd = attempts(run_dir(out, 33), "main")[-1]
    assert action == "overwrite" and "--overwrite" in cmd.split() and "--seed 33" in cmd
    rows, first = results(out), results(one_job)
    assert sorted(rows) == [(0, 31), (0, 32), (0, 33)]
    assert all(r["status"] == "ok" for r in rows.values())
    # Testing the same checkpoint again gives the same CCC.
    assert rows[(0, 32)]["CCC"] == first[(0, 32)]["CCC"]

    # Nothing left: the same command again runs nothing.
    assert sweep(env, out, seeds="31,32,33") == 0
    assert "3 already finished, 0 to run" in capsys.readouterr().out
    assert len(attempts(run_dir(out, 33), "main")) == 1


def test_interrupted_training_resumes(env, one_job):
    """An -ep 2 run killed after epoch 1: its files are those of the finished -ep 1 run (the
    first epoch does not depend on -ep), renamed; the sweep continues it with --resume."""
    out = env["base"] / "resume"
    src, dst = run_dir(one_job, 31), run_dir(out, 31, epochs=2)
    os.makedirs(dst)
    for suffix in (".pth.tar", "_resume.pth.tar", "_history.json", "_clusters.npy"):
        shutil.copy(stem(src) + suffix, stem(dst, epochs=2) + suffix)
    assert sweep(env, out, "-ep", "2", seeds="31") == 0
    action, _, cmd = attempts(dst, "main")[-1]
    assert action == "resume" and "--resume" in cmd.split()
    with open(os.path.join(dst, "main.log")) as f:
        log = f.read()
    assert "resuming" in log and "epoch 2/2" in log and "epoch 1/2" not in log
    with open(stem(dst, epochs=2) + "_history.json") as f:
        assert len(json.load(f)["val_loss"]) == 2
    row = results(out)[(0, 31)]
    assert row["status"] == "ok" and row["epochs"] == "2" and row["best_epoch"] in ("1", "2")


def test_two_jobs_give_the_results_of_one(env, one_job):
    """Two runs at once, each with its share of the cores (1 thread instead of 2).

    Not bit-identical to one job: the thread count changes how oneDNN and OpenMP split the
    convolutions' and reductions' sums, so the rounding differs, and one epoch of training
    carries that into the weights (measured: CCC 2.0e-4 vs 2.2e-4 on this near-chance
    1-epoch model, whose CCC is small, so the difference is large relative to it but
    absolutely tiny). The same thread count is bit-identical: two jobs at once equal one
    job run with 1 thread, so running concurrently changes nothing by itself.
    """
    two = env["base"] / "two_jobs"
    assert sweep(env, two, "--jobs", "2") == 0
    for seed in (31, 32):
        assert [a[:2] for a in attempts(run_dir(two, seed), "main")] == [("train", "1")]
    a, b = results(one_job), results(two)
    for key in a:
        assert float(b[key]["CCC"]) == pytest.approx(float(a[key]["CCC"]), abs=1e-4)
    single = env["base"] / "one_job_one_thread"
    assert sweep(env, single, seeds="31", cores=1) == 0
    assert attempts(run_dir(single, 31), "main")[0][1] == "1"
    assert results(single)[(0, 31)]["CCC"] == b[(0, 31)]["CCC"]
    with open(stem(run_dir(single, 31)) + ".pth.tar", "rb") as f1, \
            open(stem(run_dir(two, 31)) + ".pth.tar", "rb") as f2:
        assert f1.read() == f2.read()


def test_failed_run_is_recorded_and_the_sweep_goes_on(env, tmp_path, capsys):
    """-unlabel 5 from a pool of 5 feature files, one of them damaged (which no check before the
    sweep reads), fails; the -unlabel 0 run after it finishes."""
    out = env["base"] / "failing"
    pool = tmp_path / "unlabelled"
    pool.mkdir()
    for name in sorted(os.listdir(env["corpus"]["features"]))[:4]:
        shutil.copy(os.path.join(env["corpus"]["features"], name), pool / name)
    (pool / "damaged.mat").write_bytes(b"not a MAT file")
    assert sweep(env, out, "-unlabel", "5,0", "--unlabeled-features", str(pool), seeds="31") == 1
    printed = capsys.readouterr().out
    assert "1 done, 0 running, 0 left, 1 failed of 2; time left" in printed
    rows = results(out)
    assert rows[(5, 31)]["status"] == "failed"
    assert rows[(5, 31)]["error"].startswith(f"main.py: error: cannot read features from {pool / 'damaged.mat'}")
    assert rows[(5, 31)]["CCC"] == ""
    assert rows[(0, 31)]["status"] == "ok" and rows[(0, 31)]["CCC"] != ""
    md = (out / "results.md").read_text()
    assert "cannot read features from" in md.split("## Failed runs", 1)[1]


# --- bad input ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("change, message", [
    (["-mt", "Temp-GRU,Temp-LSTM"], "-mt: unknown value 'Temp-LSTM'"),
    (["-emo", "Aro"], "-emo: unknown value 'Aro'"),
    (["-nc", "10,1"], "-nc: 1 is below the minimum 2"),
    (["--seeds", "31,x"], "--seeds: 'x' is not an integer"),
    (["--seeds", "31,,32"], "--seeds: empty item"),
    (["--seeds", "31,31"], "--seeds: '31' given twice"),
    (["--precision", "fp16"], "--precision: unknown value 'fp16'"),
    (["--features", "/no/such/folder"], "--features folder not found"),
    (["-unlabel", "10", "--unlabeled-features", "/no/such/pool"], "--unlabeled-features folder not found"),
    (["--devices", "gpu0"], "--devices: 'gpu0' is not a device"),
])
def test_bad_input_is_refused(env, tmp_path, change, message):
    out = tmp_path / "out"
    with pytest.raises(UserError) as err:
        reproduce.main(flags(env, out) + change)
    assert message in str(err.value)
    assert not out.exists()


@pytest.mark.parametrize("argv", [["--jobs", "0", "--out", "x"], ["-ep", "0", "--out", "x"], [],
                                  ["--jobs", "2", "--devices", "cpu,cpu", "--out", "x"]])
def test_argparse_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main(argv)
    assert exit_info.value.code == 2


def test_command_line_error_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "reproduce.py", "-mt", "Temp-LSTM", "--out", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.startswith("error: -mt: unknown value 'Temp-LSTM'")
    assert len(done.stderr.strip().splitlines()) == 1
