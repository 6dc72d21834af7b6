"""Item 5: peak resident memory of a command run in a child process isolated from this one, and of a
main.py training run."""
import json
import os
import subprocess
import sys
import time

from bench import EMOTION, ROOT


# Linux keeps a process's peak RSS across exec, and a forked child starts with its
# parent's: a child forked from this (large) process would report at least this
# process's size. So a small launcher process is started first, and it runs the
# command as its own child and reports that child's ru_maxrss (from wait4).
RSS_LAUNCHER = (
    "import json, os, subprocess, sys\n"
    "with open(sys.argv[2], 'w') as log:\n"
    "    p = subprocess.Popen(sys.argv[3:], stdout=log, stderr=subprocess.STDOUT)\n"
    "    _, status, usage = os.wait4(p.pid, 0)\n"
    "with open(sys.argv[1], 'w') as f:\n"
    "    json.dump({'rc': os.waitstatus_to_exitcode(status), 'maxrss_kib': usage.ru_maxrss}, f)\n")


def peak_rss(cmd, work, tag):
    """ru_maxrss (MiB) and wall seconds of `cmd` run in a child process isolated from this one."""
    os.makedirs(work, exist_ok=True)
    log_path, result_path = os.path.join(work, f"{tag}.log"), os.path.join(work, f"{tag}_rusage.json")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", RSS_LAUNCHER, result_path, log_path] + cmd, cwd=ROOT, check=True)
    seconds = time.perf_counter() - t0
    with open(result_path) as f:
        result = json.load(f)
    if result["rc"] != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise RuntimeError(f"{tag}: {' '.join(cmd[:3])} … exited with {result['rc']}:\n{tail}")
    return result["maxrss_kib"] / 1024.0, seconds  # ru_maxrss is in KiB on Linux


def training_peak_rss(corpus, args, batch):
    """ru_maxrss (MiB) of main.py training one epoch on the generated corpus."""
    work = os.path.join(corpus.root, "rss_train")
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), "-ep", "1", "-batch", str(batch),
           "-emo", EMOTION, "-nc", str(args.num_clusters), "-mt", args.model_type,
           "--features", corpus.features, "--labels", corpus.labels, "--norm-dir", corpus.norm_dir,
           "--model-dir", os.path.join(work, "models"), "--cache-dir", os.path.join(work, "cache"),
           "--device", args.device, "--precision", args.precision, "--compile", args.compile]
    return peak_rss(cmd, work, "main")
