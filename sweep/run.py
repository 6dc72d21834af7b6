"""One run of a reproduce.py sweep: its cell and seed, the files it keeps in its folder, what
it still needs (train, resume, test or nothing), the main.py and online_testing.py command
lines that do it, and its results.csv row read back from the folder.

Nothing here starts a process: an executor (sweep/local.py) runs the command lines.
"""
import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass

from deepemocluster.releases import RELEASES
from deepemocluster.training_files import TrainingFiles, saved_epoch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the scripts' folder: commands run from here
FROM_SCRATCH = "none"      # the --init-from grid level of a run trained from scratch


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
    init: str = FROM_SCRATCH     # main.py --init-from: a release's name or a checkpoint's path

    @property
    def name(self):
        return os.path.basename(self.folder)

    @property
    def files(self):
        """The files its training writes into its folder (checkpoint, history, resume...)."""
        return TrainingFiles(self.folder, self.epochs, self.batch, self.k, self.emo, self.type, self.unlabel)

    def test_json(self, split):
        return os.path.join(self.folder, f"test_{split}.json")


def init_tag(init):
    """A starting point in a run folder's name: '' from scratch (the name of every sweep before
    the --init-from axis), '_from-v1.8' for a release, '_from-<stem>-<hash>' for a checkpoint
    file (the hash of its absolute path keeps files of the same name apart)."""
    if init == FROM_SCRATCH:
        return ""
    if init in RELEASES:
        return f"_from-{init}"
    stem = os.path.basename(init)
    stem = re.sub(r"[^\w.-]+", "_", stem[:-len(".pth.tar")] if stem.endswith(".pth.tar") else stem)
    return f"_from-{stem}-{hashlib.sha1(os.path.abspath(init).encode()).hexdigest()[:8]}"


def read_json(path):
    """A JSON file's contents, or None when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def trained_epochs(run):
    history = read_json(run.files.history)
    try:
        return len(history["val_loss"])
    except (TypeError, KeyError):
        return 0


def plan(run, split):
    """What a run still needs: 'done', 'test', 'resume', 'overwrite' or 'train'."""
    has_ckpt = os.path.isfile(run.files.checkpoint)
    epochs = trained_epochs(run)
    if has_ckpt and read_json(run.test_json(split)) is not None:
        return "done"
    if has_ckpt and epochs >= run.epochs:
        return "test"        # training finished (its history is written after the checkpoint)
    if os.path.isfile(run.files.resume) and has_ckpt and epochs > 0:
        return "resume"      # killed after a completed epoch
    if has_ckpt:
        return "overwrite"   # killed inside epoch 1's saving: a checkpoint without a resume state
    return "train"


def training_launcher(processes):
    """How main.py starts: plain, or under torchrun over `processes` processes of this machine
    (one per GPU; main.py takes GPU LOCAL_RANK and the global-batch semantics of deepemocluster/distributed.py)."""
    if processes == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc_per_node", str(processes)]


def commands(run, settings, device, action):
    """The main.py and online_testing.py command lines a run still needs."""
    model = ["-ep", str(run.epochs), "-batch", str(run.batch), "-emo", run.emo, "-nc", str(run.k),
             "-mt", run.type, "-unlabel", str(run.unlabel), "--precision", run.precision,
             "--norm-dir", settings.norm_dir, "--model-dir", run.folder, "--device", device,
             "--features", settings.features, "--labels", settings.labels, "--cache-dir", settings.cache_dir]
    out = []
    if action in ("train", "resume", "overwrite"):
        extra = {"train": [], "resume": ["--resume"], "overwrite": ["--overwrite"]}[action]
        if run.init != FROM_SCRATCH:
            extra = ["--init-from", run.init] + extra
        out.append(("main", training_launcher(settings.processes) + ["main.py"] + model +
                    ["--seed", str(run.seed), "--unlabeled-features", settings.unlabeled_features,
                     "--val-split", settings.val_split] + extra))
    out.append(("test", [sys.executable, "online_testing.py"] + model +
                ["--split", settings.split, "--result-json", run.test_json(settings.split)]))
    return out


def trained_device(run):
    """Device and arithmetic of the last epoch trained, as the run's history records them
    (training_files.where_it_ran): 'cpu (bf16)', 'cuda (fp32) x 2 processes' under torchrun."""
    history = read_json(run.files.history) or {}
    places = [place for place in history.get("ran_on", []) if place]
    if not places:
        return ""
    place = places[-1]
    processes = f" x {place['processes']} processes" if place["backend"] else ""
    return f"{place['device']} ({place['precision']}){processes}"


def make_row(run, settings):
    """The results.csv row of a run from its folder: finished, or failed at its last attempt;
    None for a run not attempted yet or left unfinished (it runs again)."""
    record = read_json(os.path.join(run.folder, "run.json")) or {}
    done = plan(run, settings.split) == "done"
    if not done and (record.get("split"), record.get("status")) != (settings.split, "failed"):
        return None
    result = read_json(run.test_json(settings.split)) if done else None
    history = read_json(run.files.history)
    best = seconds = ""
    if history and history.get("val_loss"):
        best = saved_epoch(history)
        seconds = sum(history.get("seconds", [])) + (record.get("test_seconds") or 0)
        seconds = f"{seconds:.1f}"
    return {"type": run.type, "attribute": run.emo, "K": run.k, "unlabel": run.unlabel,
            "seed": run.seed, "epochs": run.epochs, "batch": run.batch, "split": settings.split,
            "CCC": repr(float(result["ccc"])) if result else "", "best_epoch": best,
            "seconds": seconds, "precision": run.precision, "device": trained_device(run),
            "commit": record.get("commit", ""),
            "status": "ok" if done else "failed",
            "error": "" if done else record.get("error", ""), "init_from": run.init}
