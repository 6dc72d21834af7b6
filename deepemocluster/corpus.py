"""Where the scripts look unless told otherwise (the built-in demo corpus, in MSP-Podcast's
layout, and the folders beside it), and the unlabelled turns a semi-supervised run trains on."""
import glob
import os

import numpy as np

from clustering import check_cluster_count
from utils import UserError

# Data paths: the demo corpus make_demo_corpus.py writes; every script takes them as flags too.
DEMO_CORPUS = "./demo_corpus"
AUDIO_DIR = DEMO_CORPUS + "/Audios"
FEATURES_DIR = DEMO_CORPUS + "/Features"
LABELS_CSV = DEMO_CORPUS + "/Labels/labels_concensus.csv"
UNLABELED_FEATURES_DIR = DEMO_CORPUS + "/Unlabeled_Features"
PREDICT_DIR = DEMO_CORPUS + "/Predict"
CACHE_DIR = "./cache"
NORM_DIR = "./NormTerm"
MODEL_DIR = "./trained_models"


# --- the unlabelled pool (method §6) ----------------------------------------------------------
UNLABELLED_SUBSET_SEED = 99


def unlabelled_subset(n_pool, n):
    """Indices of the N unlabelled turns, as the authors' release chooses them (method §6):
    the first N after shuffling the sorted pool's indices with numpy's legacy generator
    seeded with 99. The same N in every run; the run's own random streams are not touched."""
    indices = np.arange(n_pool)
    np.random.RandomState(UNLABELLED_SUBSET_SEED).shuffle(indices)
    return indices[:n]


def unlabelled_files(folder, n, k):
    """The N unlabelled feature files of the pool in `folder` (the authors' subset of the sorted
    file list), once the pool is checked to hold N turns and N turns to have chunks for K clusters."""
    pool = sorted(glob.glob(os.path.join(folder, "*.mat")))
    if not pool:
        raise UserError(f"-unlabel {n} asked for, but {folder} holds no .mat feature files "
                        "(run feat_extract.py on the unlabelled audio)")
    if n > len(pool):
        raise UserError(f"-unlabel {n} is larger than the unlabelled pool "
                        f"({len(pool)} feature files in {folder})")
    check_cluster_count(n, k, f"-unlabel {n}")
    return [pool[i] for i in unlabelled_subset(len(pool), n)]
