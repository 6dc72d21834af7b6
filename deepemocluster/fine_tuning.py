"""Fine-tuning (main.py --init-from SOURCE): a training run that starts from the weights of an
installed release or of a checkpoint file instead of the method's random initialisation, on a
corpus of one's own (docs/training.md, "Fine-tuning").

Everything else is the method's training: joint training, k-means every epoch, sentence-uniform
sampling; the cluster top layer is made anew each epoch as always. The source is checked
against -mt, -nc and -emo before any work, each mismatch refused in one line. The labels are
normalised with the new corpus's Train statistics (its NormTerm); the features with the
corpus's (default) or the source's (--init-feature-norm source), and then the run's --norm-dir
holds the source's feature statistics, so that the model and its NormTerm folder stay one pair
for testing and prediction. The starting point is recorded in the checkpoint ("init_from") and
the history JSON; --resume continues from the run's own state and never loads the source again.
"""
import argparse
import json
import os
import re
from dataclasses import dataclass, field, fields

import numpy as np

from deepemocluster import distributed, releases
from deepemocluster.features import load_norm_term, norm_files, save_norm_term
from deepemocluster.labels import label_norm_term
from model import build_model, canonical_state_dict, infer_checkpoint_setup, read_checkpoint
from utils import NORM_VAR, TEMPORAL_TYPES, UserError, at_least, file_sha256, load_mat

FEATURE_NORMS = ("corpus", "source")
DEFAULT_FEATURE_NORM = "corpus"
DEFAULT_FREEZE_EPOCHS = 0
DEFAULT_LR_SCALE = 1.0
RECORD_KEY = "init_from"                        # in the checkpoint and the history JSON
ENCODER_MODULES = ("cnn_features", "cnn_out")   # the chunk encoder (model.py)
FRESH_MODULE = "top_layer_class"                # the cluster top layer, made anew every epoch
FEATURE_KEYS = ("feat_mean", "feat_std")
# The defaults of the flags that go with --init-from (by dest), which apply with it only.
FLAG_DEFAULTS = {"init_feature_norm": DEFAULT_FEATURE_NORM, "init_norm_dir": None,
                 "init_freeze_epochs": DEFAULT_FREEZE_EPOCHS, "init_lr_scale": DEFAULT_LR_SCALE}
# The record's fields that a flag sets (field → dest): a resumed run's flags must agree.
RECORDED_FLAGS = {"source": "init_from", "feature_norm": "init_feature_norm",
                  "freeze_epochs": "init_freeze_epochs", "lr_scale": "init_lr_scale"}
CHECKPOINT_NAME = re.compile(r"^TempDeepEmoCluster_epoch\d+_batch\d+_(\d+)clusters_(Act|Dom|Val)_"
                             r"(Temp-[A-Za-z]+)(?:_unlabel\d+)?\.pth\.tar$")
KEYS_SHOWN = 3


# --- the flags ---------------------------------------------------------------------------
def flag(dest):
    """The command-line spelling of a flag: init_lr_scale → --init-lr-scale."""
    return "--" + dest.replace("_", "-")


def positive_scale(text):
    """An argparse type: a number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--init-lr-scale must be a number, got {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"--init-lr-scale must be above 0, got {text}")
    return value


def add_flags(parser):
    """--init-from SOURCE and the flags that say how a fine-tuning starts."""
    g = parser.add_argument_group("fine-tuning (start from a trained model)")
    g.add_argument("--init-from", metavar="SOURCE",
                   help="start from the weights of SOURCE for the same -mt and -emo: an installed "
                        "release (" + ", ".join(releases.RELEASES) + ", as --release names them; "
                        "fetch_models.py installs them) or a checkpoint file. All its weights are "
                        "loaded (the encoder, the temporal model, the regression head, the cluster "
                        "head's first layer) but the cluster top layer, made anew each epoch as always")
    g.add_argument("--init-feature-norm", choices=FEATURE_NORMS, default=None,
                   help=f"features normalised with the corpus's Train statistics (the --norm-dir "
                        f"of norm_para.py; default {DEFAULT_FEATURE_NORM}) or with the source's "
                        "(then --norm-dir must be a folder of this run's own: main.py writes the "
                        "source's feature and the corpus's label statistics there)")
    g.add_argument("--init-norm-dir", metavar="DIR", default=None,
                   help="with --init-feature-norm source and a checkpoint file: the NormTerm "
                        "folder SOURCE was trained with (a release brings its own)")
    g.add_argument("--init-freeze-epochs", metavar="N", type=at_least(0, "--init-freeze-epochs"),
                   default=None,
                   help="hold the encoder's weights fixed for the first N epochs (its BatchNorm "
                        f"statistics still follow the corpus; default {DEFAULT_FREEZE_EPOCHS})")
    g.add_argument("--init-lr-scale", metavar="X", type=positive_scale, default=None,
                   help=f"multiply the SGD and Adam learning rates by X (default {DEFAULT_LR_SCALE:g}; "
                        "the fresh cluster top layer keeps its own)")


def check_flags(parser, args):
    """The fine-tuning flags need --init-from; left out, they take their defaults."""
    given = [flag(dest) for dest in FLAG_DEFAULTS if getattr(args, dest) is not None]
    if given and args.init_from is None:
        parser.error(f"{', '.join(given)}: for fine-tuning only (give --init-from SOURCE)")
    if args.init_norm_dir is not None and args.init_feature_norm != "source":
        parser.error("--init-norm-dir: for --init-feature-norm source only")
    for dest, value in FLAG_DEFAULTS.items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)


# --- the source --------------------------------------------------------------------------
@dataclass
class Start:
    """Where a fine-tuning starts and how it trains: what the checkpoint and history record."""
    source: str             # as given: a release's name or the checkpoint's path
    kind: str               # "release" or "checkpoint"
    checkpoint: str         # the file the weights come from (absolute)
    sha256: str             # of that file
    feature_norm: str       # "corpus" or "source"
    freeze_epochs: int
    lr_scale: float
    state: dict = field(default=None, repr=False, compare=False)   # the weights, until loaded

    def record(self):
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "state"}


def resolve_source(source, model_type, emotion, n_clusters, released_dir=None):
    """(kind, checkpoint path, the source's NormTerm folder or None) of SOURCE for this -mt and
    -emo: an installed release's model (under `released_dir`, default releases.RELEASED_DIR),
    or a checkpoint file. Refused in one line otherwise."""
    if source in releases.RELEASES:
        root = releases.RELEASED_DIR if released_dir is None else released_dir
        release = releases.check_release(source, model_type, root)   # installed, has this -mt
        k = release.clusters[emotion]
        if k != n_clusters:
            raise UserError(f"--init-from {source}: its {emotion} model has {k} clusters, but -nc "
                            f"{n_clusters} was given: give -nc {k} (the cluster head's size)")
        _, norm_dir = releases.release_dirs(source, root)
        return "release", os.path.join(root, source, release.model_path(emotion, model_type)), norm_dir
    if not os.path.isfile(source):
        raise UserError(f"--init-from {source}: neither a release ({', '.join(releases.RELEASES)}) "
                        "nor a checkpoint file: give an installed release's name or a checkpoint's "
                        "path")
    named = CHECKPOINT_NAME.match(os.path.basename(source))
    if named and named.group(2) != emotion:
        raise UserError(f"--init-from {source} is a model of {named.group(2)} (its name says so), "
                        f"but -emo {emotion} was given: give -emo {named.group(2)}, or a "
                        f"checkpoint of {emotion}")
    return "checkpoint", source, None


def source_weights(path, model_type, n_clusters):
    """The checkpoint's state dict (canonical keys), after checking that it is one of a
    `model_type` model with `n_clusters` clusters: one line says what differs otherwise."""
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UserError(f"--init-from {path}: not a TempDeepEmoCluster checkpoint (no 'state_dict'); "
                        "give a checkpoint written by main.py or a released one")
    state = canonical_state_dict(ckpt["state_dict"])
    found_mt, found_k = infer_checkpoint_setup(state)
    if found_mt is not None and found_mt != model_type and found_mt in TEMPORAL_TYPES:
        raise UserError(f"--init-from {path} holds a {found_mt} model, but -mt {model_type} was "
                        f"given: give -mt {found_mt}, or a source of {model_type}")
    if found_k is not None and found_k != n_clusters:
        raise UserError(f"--init-from {path} was trained with {found_k} clusters, but -nc "
                        f"{n_clusters} was given: give -nc {found_k} (the cluster head's size)")
    expected = build_model(model_type, n_clusters).state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    resized = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or resized:
        parts = [f"{what} {', '.join(keys[:KEYS_SHOWN])}{' …' if len(keys) > KEYS_SHOWN else ''}"
                 for what, keys in (("lacks", missing), ("has unknown", unexpected),
                                    ("has other shapes for", resized)) if keys]
        raise UserError(f"--init-from {path} is not a checkpoint of a {model_type} model with "
                        f"{n_clusters} clusters: it {'; '.join(parts)}; give a checkpoint written "
                        "by main.py or a released one")
    return state


def check_source(source, model_type, emotion, n_clusters, released_dir=None):
    """Refuse, in main.py's words, a SOURCE that main.py would refuse (reproduce.py's check of
    its grid before the first run)."""
    _, path, _ = resolve_source(source, model_type, emotion, n_clusters, released_dir)
    source_weights(path, model_type, n_clusters)


# --- the NormTerm pair -------------------------------------------------------------------
def read_norm_files(norm_dir):
    """{key: values} of the NormTerm files present in `norm_dir`."""
    out = {}
    for key, path in norm_files(norm_dir).items():
        if os.path.isfile(path):
            out[key] = np.asarray(load_mat(path, NORM_VAR), dtype=np.float64).reshape(-1)
    return out


def source_feature_norm(source, source_norm_dir, init_norm_dir):
    """The source's feature mean and std: its release's NormTerm, or --init-norm-dir."""
    folder = source_norm_dir or init_norm_dir
    if folder is None:
        raise UserError(f"--init-feature-norm source: {source} is a checkpoint file, whose feature "
                        "statistics are in the NormTerm folder it was trained with: give it with "
                        "--init-norm-dir DIR, or use --init-feature-norm corpus")
    features = load_norm_term(folder, emotions=())["features"]
    return {"feat_mean": features.mean, "feat_std": features.std}


def pair_norm_term(norm_dir, labels_csv, features, settings, what):
    """Make `norm_dir` hold `features` (the source's feature statistics) and the corpus's Train
    label statistics: written where absent (by rank 0 under torchrun), refused where it holds
    others (another model's pair: not replaced)."""
    _, labels = label_norm_term(labels_csv)
    wanted = {**features, **labels}
    with distributed.main_first(settings):
        present = read_norm_files(norm_dir)
        other = [key for key, value in present.items()
                 if not np.array_equal(value, np.asarray(wanted[key], dtype=np.float64).reshape(-1))]
        if other:
            kind = "feature" if any(k in FEATURE_KEYS for k in other) else "label"
            raise UserError(f"--init-feature-norm source: --norm-dir {norm_dir} holds other {kind} "
                            f"statistics than this run trains with ({what}'s features, the corpus's "
                            "Train labels), those of another model: give a NormTerm folder of this "
                            "run's own, e.g. --norm-dir "
                            f"{os.path.normpath(norm_dir)}_{safe_name(what)}, which main.py fills")
        if settings.is_main and len(present) < len(wanted):
            save_norm_term({k: v for k, v in wanted.items() if k not in present}, norm_dir)


def safe_name(source):
    """A source as a folder suffix: the release's name, or the checkpoint's file stem."""
    stem = os.path.basename(source)
    stem = stem[:-len(".pth.tar")] if stem.endswith(".pth.tar") else stem
    return re.sub(r"[^\w.-]+", "_", stem)


# --- main.py's steps -----------------------------------------------------------------------
def starting_point(args, settings, history_path):
    """The run's Start (None from scratch), checked before any work. A fresh run resolves and
    checks SOURCE and, with --init-feature-norm source, pairs --norm-dir with it. --resume takes
    the start recorded in the run's history and refuses flags that contradict it."""
    if args.resume:
        return recorded_start(args, history_path)
    if args.init_from is None:
        return None
    kind, path, source_norm_dir = resolve_source(args.init_from, args.model_type, args.emo_attr,
                                                 args.num_clusters)
    state = source_weights(path, args.model_type, args.num_clusters)
    if args.init_feature_norm == "source":
        features = source_feature_norm(args.init_from, source_norm_dir, args.init_norm_dir)
        pair_norm_term(args.norm_dir, args.labels, features, settings, args.init_from)
    return Start(args.init_from, kind, os.path.abspath(path), file_sha256(path), args.init_feature_norm,
                 args.init_freeze_epochs, args.init_lr_scale, state)


def recorded_start(args, history_path):
    """The Start a resumed run recorded (None: it started from scratch); the fine-tuning flags
    given must agree with it, or be left out."""
    try:
        with open(history_path) as f:
            record = json.load(f).get(RECORD_KEY)
    except (OSError, ValueError, AttributeError):
        return None            # no history: the resume itself reports it
    if record is None:
        if args.init_from is not None:
            raise UserError(f"--resume: this run started from scratch, not from --init-from "
                            f"{args.init_from}: leave --init-from out, or train another run "
                            "(--model-dir DIR or --overwrite)")
        return None
    start = Start(**{f.name: record[f.name] for f in fields(Start) if f.name != "state"})
    if args.init_from is not None:
        for key, dest in RECORDED_FLAGS.items():
            if getattr(args, dest) != getattr(start, key):
                raise UserError(f"--resume: this run started with {flag(dest)} {getattr(start, key)}, "
                                f"not {getattr(args, dest)}: give the flags it started with (or "
                                "leave the fine-tuning flags out)")
    return start


def start_from(model, optimizers, start, resume):
    """Load the source's weights into the freshly built model (all but the cluster top layer,
    which the model has not while its cluster head is off) and scale the learning rates. With
    --resume the weights are not loaded (the resume state holds the run's own) and the
    optimisers' saved state brings back their scaled rates."""
    if start is None:
        return
    for opt in optimizers:
        for group in opt.param_groups:
            group["lr"] *= start.lr_scale
    if resume:
        return
    state = {k: v for k, v in start.state.items() if not k.startswith(FRESH_MODULE + ".")}
    model.load_state_dict(state, strict=True)
    start.state = None


def hold_encoder(model, epoch, start):
    """Hold the encoder's weights fixed for the first `freeze_epochs` epochs (0-based `epoch`):
    they get no gradients, so neither optimiser moves them."""
    if start is None or not start.freeze_epochs:
        return
    trainable = epoch >= start.freeze_epochs
    for name in ENCODER_MODULES:
        for p in getattr(model, name).parameters():
            p.requires_grad_(trainable)


def record(start):
    """What a checkpoint and the history JSON hold of the starting point ({} from scratch)."""
    return {} if start is None else {RECORD_KEY: start.record()}


def describe(start, norm_dir):
    """The start-up line's account of the starting point."""
    if start is None:
        return ""
    norm = ("features normalised with the source's statistics, labels with the corpus's Train "
            f"statistics (both in {norm_dir})" if start.feature_norm == "source" else
            f"features and labels normalised with the corpus's Train statistics ({norm_dir})")
    epochs = "epoch" if start.freeze_epochs == 1 else f"{start.freeze_epochs} epochs"
    freeze = f", the encoder held fixed for the first {epochs}" if start.freeze_epochs else ""
    rates = f", learning rates × {start.lr_scale:g}" if start.lr_scale != 1 else ""
    source = (f"release {start.source} ({start.checkpoint})" if start.kind == "release"
              else f"checkpoint {start.checkpoint}")
    return f"starting from {source}: {norm}{freeze}{rates}"
