"""What a reproduce.py sweep checks before its first run starts, whichever executor runs it:
everything main.py and online_testing.py would refuse in any run of the grid, refused with
their own messages in seconds rather than after a training run.

The grid's values and devices are checked as reproduce.py parses them; this adds the data:
the folders, the labels file and its splits (Train, the validation split, the test split,
for every attribute of the grid), the NormTerm files, the feature file of every turn those
splits hold, the cluster counts against the Train split, the unlabelled pool, and each
starting point (--init-from) against every cell's -mt, -emo and -nc.
"""
import os

from clustering import check_cluster_count
from deepemocluster import fine_tuning, releases
from deepemocluster.corpus import unlabelled_files
from deepemocluster.distributed import check_batch
from deepemocluster.features import load_norm_term
from deepemocluster.labels import feature_paths, read_labels, validation_split
from deepemocluster.compute import pick_device
from sweep.run import FROM_SCRATCH, ROOT
from utils import TRAIN_SPLIT, UserError


def check_sweep(settings):
    """Raise the UserError the first failing run of the sweep `settings` (reproduce.Settings) would
    stop on."""
    check_folders(settings)
    check_batch(settings.batch, settings.processes)
    load_norm_term(settings.norm_dir, settings.emotions, settings.labels, settings.features)
    val_split = validation_split(settings.labels, settings.val_split)
    stems = set()
    for emo in settings.emotions:
        train, _ = read_labels(settings.labels, TRAIN_SPLIT, (emo,))
        for split in (val_split, settings.split):
            stems.update(read_labels(settings.labels, split, (emo,))[0])
        stems.update(train)
        for k in settings.clusters:
            check_cluster_count(len(train), k, "the Train split")
    feature_paths(settings.features, sorted(stems))
    for n in [n for n in settings.unlabels if n > 0]:
        for k in settings.clusters:
            unlabelled_files(settings.unlabeled_features, n, k)
    check_starting_points(settings)
    if settings.slurm is None:         # a SLURM job's GPU is on its node, not on this machine
        for device in dict.fromkeys(settings.slots):
            pick_device(device)


def check_starting_points(settings):
    """Every --init-from source fits every cell it starts (releases: as the runs find them,
    relative to the scripts' folder)."""
    released = os.path.join(ROOT, releases.RELEASED_DIR)
    for init in [i for i in settings.inits if i != FROM_SCRATCH]:
        for mt in settings.types:
            for emo in settings.emotions:
                for k in settings.clusters:
                    fine_tuning.check_source(init, mt, emo, k, released)


def check_folders(settings):
    """The data folders and the labels file exist; --out, if it exists, is a folder."""
    checks = [(settings.features, os.path.isdir, "--features folder"),
              (settings.labels, os.path.isfile, "--labels file"),
              (settings.norm_dir, os.path.isdir, "--norm-dir folder")]
    if any(settings.unlabels):
        checks.append((settings.unlabeled_features, os.path.isdir, "--unlabeled-features folder"))
    for path, exists, what in checks:
        if not exists(path):
            raise UserError(f"{what} not found: {path}")
    if os.path.exists(settings.out) and not os.path.isdir(settings.out):
        raise UserError(f"--out {settings.out} exists and is not a folder")
