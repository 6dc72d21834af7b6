"""gpu_check.sh and setup_env.sh themselves, on the CPU: the GPU check in its dry run (every
check of tests/test_gpu.py with the CPU standing in for the GPU, gloo for the processes), its
answers on a machine with no GPU and on one whose GPU torch cannot use (a fake nvidia-smi),
the faiss build it names for torch's CUDA version; setup_env.sh keeping a GPU faiss.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from support import ROOT
from support import distributed_driver as driver
from support import gpu_check

DRY_RUN_DEMO_SIZE = "0.1"      # the demo corpus of (c) and (e), scaled down (make_demo_corpus.py --size)
NO_DRIVER = """#!/bin/sh
echo "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running."
exit 9
"""
H100_DRIVER_550 = """#!/bin/sh
if [ "$1" = -L ]; then
    echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-4f3c2a10-8e1b-4c55-9d2e-7a6b5c4d3e21)"
    exit 0
fi
cat <<'EOF'
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
|   0  NVIDIA H100 80GB HBM3          On  |   00000000:19:00.0 Off |                    0 |
+-----------------------------------------+------------------------+----------------------+
EOF
"""


def machine_shows_a_gpu():
    return torch.cuda.is_available() or bool(glob.glob("/dev/nvidia[0-9]*"))


def run_gpu_check(tmp_path, *args, nvidia_smi=None, env=None):
    """Run gpu_check.sh with `nvidia_smi` (a script) first on PATH; (exit status, output lines)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if nvidia_smi is not None:
        (bin_dir / "nvidia-smi").write_text(nvidia_smi)
        (bin_dir / "nvidia-smi").chmod(0o755)
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPU_CHECK_")}
    run_env = dict(base, PATH=f"{bin_dir}:{os.environ['PATH']}", TMPDIR=str(tmp_path), **(env or {}))
    proc = subprocess.run(["bash", os.path.join(ROOT, "gpu_check.sh"), *args], cwd=tmp_path, env=run_env,
                          capture_output=True, text=True, timeout=3600)
    return proc.returncode, proc.stdout.splitlines(), proc.stderr


# --- no GPU, or a GPU torch cannot use ----------------------------------------------------------
def test_without_a_gpu_it_skips_with_exit_0(tmp_path):
    if machine_shows_a_gpu():
        pytest.skip("this machine has an NVIDIA GPU: the no-GPU answer cannot be seen here")
    rc, out, err = run_gpu_check(tmp_path, nvidia_smi=NO_DRIVER)
    assert rc == 0, err
    assert out == [f"gpu_check: SKIPPED - no CUDA device: nothing checked (no NVIDIA GPU on this machine; torch "
                   f"{torch.__version__}, CUDA build {torch.version.cuda})"]
    assert not list(tmp_path.glob("gpu_check.*"))       # no work folder: nothing ran


def test_a_gpu_that_a_cpu_build_of_torch_cannot_use_fails_in_one_line(tmp_path):
    if torch.version.cuda is not None:
        pytest.skip("torch here is a CUDA build: the CPU-build answer cannot be seen here")
    rc, out, err = run_gpu_check(tmp_path, nvidia_smi=H100_DRIVER_550)
    assert rc == 1
    assert out == [f"gpu_check: FAILED - this machine shows 1 NVIDIA GPU(s) (NVIDIA H100 80GB HBM3; nvidia-smi "
                   f"-L), but torch {torch.__version__} is a CPU build (torch.version.cuda is None): install a "
                   f"CUDA build of torch (on Linux, torch from PyPI is one; README, Install) and run gpu_check.sh "
                   f"again"]
    assert "Traceback" not in err


def test_gpu_check_reads_the_driver_from_nvidia_smi(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(H100_DRIVER_550)
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    gpus = gpu_check.machine_gpus()
    assert (gpus.names, gpus.driver, gpus.driver_cuda) == (["NVIDIA H100 80GB HBM3"], "550.54.15", "12.4")
    (bin_dir / "nvidia-smi").write_text(NO_DRIVER)
    assert gpu_check.machine_gpus().names == []


def test_a_cuda_build_that_cannot_use_the_gpu_says_why():
    h100 = SimpleNamespace(names=["NVIDIA H100 80GB HBM3"], nodes=["/dev/nvidia0"], driver="550.54.15",
                           driver_cuda="12.4")
    start = ("FAILED - this machine shows 1 NVIDIA GPU(s) (NVIDIA H100 80GB HBM3; nvidia-smi -L), but torch "
             "2.13.0 (built for CUDA 13.0) cannot use it: torch.cuda.is_available() is False")
    too_old = "CUDA initialization: The NVIDIA driver on your system is too old (found version 12040)"
    assert gpu_check.why_torch_cannot_use(h100, "2.13.0", "13.0", too_old) == (
        f"{start} (torch: {too_old}); the driver 550.54.15 supports CUDA 12.4 at most, older than torch's CUDA "
        "13.0: update the NVIDIA driver, or install a torch build for CUDA 12.4 or older (pytorch.org)")
    recent = SimpleNamespace(**{**vars(h100), "driver": "580.65.06", "driver_cuda": "13.0"})
    assert gpu_check.why_torch_cannot_use(recent, "2.13.0", "13.0", None, "") == (
        f"{start}; the driver 580.65.06 supports CUDA 13.0, enough for torch's: check CUDA_VISIBLE_DEVICES ('') "
        "and that this user can open /dev/nvidia*")
    files_only = SimpleNamespace(names=[], nodes=["/dev/nvidia0", "/dev/nvidia1"], driver=None, driver_cuda=None)
    assert gpu_check.why_torch_cannot_use(files_only, "2.13.0", "13.0") == (
        "FAILED - this machine shows an NVIDIA GPU (/dev/nvidia0, /dev/nvidia1; nvidia-smi not found or failing), "
        "but torch 2.13.0 (built for CUDA 13.0) cannot use it: torch.cuda.is_available() is False; the driver's "
        "CUDA version is unknown (nvidia-smi not found or failing): check CUDA_VISIBLE_DEVICES (unset) and that "
        "this user can open /dev/nvidia*")


def test_the_faiss_build_named_matches_torchs_cuda_version():
    assert gpu_check.faiss_build_for("12.6") == "faiss-gpu-cu12"
    assert gpu_check.faiss_build_for("11.8") == "faiss-gpu-cu11"
    assert gpu_check.faiss_build_for("13.2") == "faiss-gpu-cuvs"
    assert gpu_check.faiss_build_for("13.0") is None         # torch==2.13.0 from PyPI
    assert gpu_check.faiss_build_for(None) is None
    assert gpu_check.faiss_advice("12.8") == (
        "for torch's CUDA 12.8 install faiss-gpu-cu12: .venv/bin/pip uninstall -y faiss-cpu && .venv/bin/pip "
        "install faiss-gpu-cu12 (or bash gpu_check.sh --install-faiss)")
    assert gpu_check.faiss_advice("13.0") == (
        "no faiss build on PyPI links torch's CUDA 13.0 (faiss-gpu-cu12 links CUDA 12; faiss-gpu-cuvs needs CUDA "
        "13.2 or later, which torch's own CUDA libraries exclude): install torch's CUDA 12 build from the index "
        "pytorch.org gives, then faiss-gpu-cu12")
    assert gpu_check.faiss_advice("14.0") == (
        "no faiss build on PyPI is known to link torch's CUDA 14.0: install torch's CUDA 12 build from the index "
        "pytorch.org gives, then faiss-gpu-cu12")
    assert gpu_check.faiss_advice(None) == "torch is a CPU build: no faiss GPU build to match"


# --- the dry run ------------------------------------------------------------------------------
LABELS = [label for _, label in gpu_check.CHECKS]


def test_the_dry_run_runs_every_check_on_the_cpu(tmp_path):
    work = tmp_path / "work"
    rc, out, err = run_gpu_check(tmp_path, "--dry-run", str(work),
                             env={"GPU_CHECK_DEMO_SIZE": DRY_RUN_DEMO_SIZE, "GPU_CHECK_EPOCHS": "1"})
    assert rc == 0, "\n".join(out[-60:]) + err[-3000:]
    assert out[0] == "gpu_check: DRY RUN on the CPU (no GPU checked)"
    assert re.fullmatch(r"gpu_check: faiss [\d.]+ \(faiss-cpu\): the dry run checks k-means on the CPU path", out[1])
    assert out[2] == f"gpu_check: work folder {work}"
    summary = out[out.index("gpu_check summary on DRY RUN on the CPU (no GPU checked)") + 1:]
    assert summary[-1] == f"  overall: PASSED; log: {work}/pytest.log"
    checks = [line for line in summary if re.match(r"  (PASSED|SKIPPED|FAILED|ERROR) ", line)]
    types = "Temp-GRU", "Temp-CNN", "Temp-Trans", "Temp-Triplet"
    assert checks == (
        [f"  SKIPPED {LABELS[0]} - dry run: configure_backends only acts on CUDA"]
        + [f"  PASSED  {LABELS[1]} [{m}]" for m in types + ("shipped demo",)]
        + [f"  PASSED  {label}" for label in LABELS[2:6]]
        + [f"  PASSED  {LABELS[6]} [{mt}-{unlabel}]" for mt, unlabel in driver.CONFIGS])
    # (b): the training's k-means went through faiss's CPU index beside a CPU network.
    assert re.fullmatch(r"  \(b\) k-means beside a network on cpu: 3 runs through faiss\.IndexFlatL2 "
                        r"\(faiss [\d.]+, 0 GPU\(s\) seen\), each the CPU's partition", find(summary, "  (b) "))
    # (e): both runs' validation losses, printed and compared.
    e = re.fullmatch(r"  \(e\) validation loss per epoch over 2 demo epochs: torchrun with 2 process\(es\) \(gloo\) "
                     r"([\d.]+), ([\d.]+); one process ([\d.]+), ([\d.]+); largest difference ([\d.]+) "
                     r"\(allowed 0\.05\)", find(summary, "  (e) validation"))
    assert e, find(summary, "  (e) validation")
    with open(work / "e_torchrun.json") as f:
        figures = json.load(f)
    assert [float(v) for v in e.groups()[:4]] == pytest.approx(
        figures["val_loss_torchrun"] + figures["val_loss_one_process"], abs=5e-5)
    assert float(e.group(5)) == pytest.approx(max(abs(a - b) for a, b in zip(figures["val_loss_torchrun"],
                                                                             figures["val_loss_one_process"])),
                                              abs=5e-5)
    # (f): every config, 2 processes = one, process 1 with an empty share of some batches.
    f = re.fullmatch(r"  \(f\) 2 processes \(gloo, cpu\) took the steps of one within 1e-06 in float64 \(largest "
                     r"difference [\d.e+-]+\) for Temp-GRU, Temp-CNN -unlabel, Temp-Trans, Temp-Triplet; (\d+) batches "
                     r"of up to 2 turns shared out whole, an empty share for process 1 in (\d+) of them",
                     find(summary, "  (f) "))
    assert f, find(summary, "  (f) ")
    assert int(f.group(2)) >= 1 and int(f.group(1)) > int(f.group(2))
    assert "Traceback" not in err


def find(lines, start):
    return next((line for line in lines if line.startswith(start)), f"no line starting {start!r}")


# --- setup_env.sh -----------------------------------------------------------------------------
RECORDING_PIP = """#!/bin/sh
# pip as setup_env.sh calls it, recording what it was asked to install instead of installing it
while [ $# -gt 0 ]; do
    if [ "$1" = -r ]; then cat "$2" >> "$(dirname "$0")/../asked.txt"; fi
    shift
done
"""


@pytest.fixture
def checkout(tmp_path):
    """setup_env.sh and requirements.txt in a folder of their own, with a real virtual environment
    (no pip in it: a recording one stands in, the tests never reach the internet)."""
    for name in ("setup_env.sh", "requirements.txt"):
        shutil.copy(os.path.join(ROOT, name), tmp_path / name)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / ".venv")], check=True)
    pip = tmp_path / ".venv" / "bin" / "pip"
    pip.write_text(RECORDING_PIP)
    pip.chmod(0o755)
    return tmp_path


def record_installed(venv, name, version, provides="faiss"):
    """Record distribution `name` as installed in `venv`, providing the package `provides`."""
    site = glob.glob(str(venv / "lib" / "python*" / "site-packages"))[0]
    info = os.path.join(site, f"{name.replace('-', '_')}-{version}.dist-info")
    os.makedirs(info)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    with open(os.path.join(info, "top_level.txt"), "w") as f:
        f.write(provides + "\n")


def source_setup_env(folder):
    """Source setup_env.sh as demo.sh does; (its output, what pip was asked to install or None)."""
    asked = folder / ".venv" / "asked.txt"
    if asked.exists():
        asked.unlink()
    proc = subprocess.run(["bash", "-c", "set -euo pipefail; source setup_env.sh"], cwd=folder,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, (asked.read_text().splitlines() if asked.exists() else None)


def requirement_lines(folder):
    return (folder / "requirements.txt").read_text().splitlines()


def test_setup_env_installs_the_requirements_once_and_again_when_they_change(checkout):
    out, asked = source_setup_env(checkout)
    assert out == "" and asked == requirement_lines(checkout)
    assert source_setup_env(checkout) == ("", None)                  # nothing changed: no install
    with open(checkout / "requirements.txt", "a") as f:
        f.write("# a comment changes nothing to install\n")
    assert source_setup_env(checkout) == ("", None)
    with open(checkout / "requirements.txt", "a") as f:
        f.write("tomli>=2\n")
    assert source_setup_env(checkout)[1] == requirement_lines(checkout)


@pytest.mark.parametrize("build", ["faiss-gpu-cu12", "faiss-gpu-cuvs"])
def test_setup_env_leaves_an_installed_gpu_faiss_alone(checkout, build):
    record_installed(checkout / ".venv", "faiss-cpu", "1.15.1")
    record_installed(checkout / ".venv", build, "1.15.1")
    out, asked = source_setup_env(checkout)
    assert out == (f"setup_env.sh: keeping {build} (a faiss build other than faiss-cpu): installing "
                   "requirements.txt without faiss-cpu\n")
    wanted = requirement_lines(checkout)
    assert [line for line in wanted if line.startswith("faiss")] == ["faiss-cpu>=1.7.4"]
    assert asked == [line for line in wanted if not line.startswith("faiss-cpu")]
    with open(checkout / "requirements.txt", "a") as f:             # requirements.txt changes again
        f.write("tomli>=2\n")
    assert source_setup_env(checkout)[1] == [line for line in requirement_lines(checkout)
                                             if not line.startswith("faiss-cpu")]


def test_setup_env_installs_faiss_cpu_beside_no_other_faiss(checkout):
    record_installed(checkout / ".venv", "faiss-cpu", "1.15.1")
    record_installed(checkout / ".venv", "faiss-haystack", "3.0.0", provides="haystack_integrations")
    out, asked = source_setup_env(checkout)
    assert out == "" and "faiss-cpu>=1.7.4" in asked and asked == requirement_lines(checkout)
