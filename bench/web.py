"""The web page's speed and memory (issue 31 item 7), against prediction_process.py (not part of
the tests):

    python -m bench.web [--minutes 10] [--requests 50] [--short-minutes 0.5] [--workdir DIR]

On a speech-like recording of --minutes (demo/long_recording.py) it times
prediction_process.py (the whole command in a child process, and the prediction it reports),
then app.py, started once with the same models: the /predict request for the same file
(upload, prediction, answer), and the server's resident memory (VmRSS) after each of
--requests requests for a --short-minutes recording.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

from bench import ROOT
from bench.measure import log
from demo import long_recording
from bench.memory import peak_rss

TURN_FLAGS = ["--turns", "vad"]
RSS_SHOWN_AT = (1, 10, 25, 50)       # requests after which the RSS is printed (and the last)


def recording(folder, minutes):
    """A speech-like WAV of `minutes` in `folder` (demo/long_recording.py): its path."""
    return long_recording.write(folder, minutes)[0]


def command_time(wav, work):
    """(wall seconds of the command, seconds of the prediction it reports, its peak RSS in MiB)."""
    out = os.path.join(work, "pred.csv")
    rss, wall = peak_rss([sys.executable, "prediction_process.py", "--input", os.path.dirname(wav),
                          "--output", out, *TURN_FLAGS], work, "command")
    with open(os.path.join(work, "command.log")) as f:
        reported = float(re.search(r" in ([\d.]+)s: ", f.read())[1])
    return wall, reported, rss


def start_app(work):
    """app.py on a free loopback port: (process, URL)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_path = os.path.join(work, "app.log")
    with open(log_path, "w") as f:
        process = subprocess.Popen([sys.executable, "app.py", "--port", str(port)], cwd=ROOT,
                                   stdout=f, stderr=subprocess.STDOUT)
    while "serving on" not in open(log_path).read():
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited:\n{open(log_path).read()}")
        time.sleep(0.5)
    return process, f"http://127.0.0.1:{port}"


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read())[1]) / 1024.0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="the long recording (default 10)")
    p.add_argument("--requests", type=int, default=50, help="requests for the RSS (default 50)")
    p.add_argument("--short-minutes", type=float, default=0.5, help="their recording (default 0.5)")
    p.add_argument("--workdir", help="keep the files here (default: a temporary folder)")
    args = p.parse_args(argv)
    from gradio_client import Client, handle_file

    work = args.workdir or tempfile.mkdtemp(prefix="bench_web_")
    os.makedirs(work, exist_ok=True)
    long_wav = recording(os.path.join(work, "long"), args.minutes)
    short_wav = recording(os.path.join(work, "short"), args.short_minutes)
    log(f"command on {args.minutes:g} min")
    wall, reported, command_rss = command_time(long_wav, work)
    process, url = start_app(work)
    try:
        client = Client(url, verbose=False)
        log(f"app.py on {args.minutes:g} min")
        t0 = time.perf_counter()
        client.predict(handle_file(long_wav), api_name="/predict")
        request = time.perf_counter() - t0
        after_long = rss_mib(process.pid)
        rss = []
        for i in range(args.requests):
            client.predict(handle_file(short_wav), api_name="/predict")
            rss.append(rss_mib(process.pid))
    finally:
        process.terminate()
        process.wait()
    print(f"{args.minutes:g}-minute recording: prediction_process.py {wall:.1f} s in all "
          f"(prediction {reported:.1f} s, peak RSS {command_rss:.0f} MiB); "
          f"app.py /predict request {request:.1f} s (server RSS after it {after_long:.0f} MiB)")
    shown = [i for i in RSS_SHOWN_AT if i <= len(rss)] + ([len(rss)] if len(rss) not in RSS_SHOWN_AT else [])
    print(f"server RSS over {len(rss)} requests of {args.short_minutes:g} min: " +
          ", ".join(f"after {i}: {rss[i - 1]:.0f} MiB" for i in shown) +
          f" (min {min(rss):.0f}, max {max(rss):.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
