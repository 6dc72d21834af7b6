"""Train Temporal-Enhanced DeepEmoCluster for one attribute (method §6).

    python main.py -ep 30 -batch 64 -emo Val -nc 10 -mt Temp-Triplet

Every epoch: chunk features with the cluster head off → faiss k-means →
pseudo-labels → sentence-level uniform sampling → joint training (cross-
entropy + CCC loss [+ triplet]) → NMI to the previous clustering →
validation CCC loss → checkpoint when it improves.
"""
import argparse
import glob
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from clustering import kmeans_on_gpu, nmi, run_kmeans
from dataloader import CACHE_DTYPES, ChunkCache, LabelledTurns, batches
from diskspace import check_training_room
from features import load_norm_term
from labels import validation_split
from model import (ARCH, build_model, canonical_state_dict, checkpoint_name, evaluate,
                   evaluation_copy, read_checkpoint, released_state_dict, triplet_indices, triplet_loss)
from runtime import (COMPILE_MIN_BATCHES, COMPILE_MODES, autocast, configure_backends, pick_device,
                     seed_everything, use_bf16, use_channels_last, use_compile)
from utils import (AGAIN, CHUNKS_PER_TURN, TRAIN_SPLIT, UserError, add_model_args, atomic_path,
                   ccc_loss, progress, run_cli, save_json, save_npy, save_torch,
                   sentence_uniform_sample)

# Data paths: edit these, or give them on the command line.
FEATURES_DIR = "./demo_corpus/Features"
LABELS_CSV = "./demo_corpus/Labels/labels_concensus.csv"
UNLABELED_FEATURES_DIR = "./demo_corpus/Unlabeled_Features"
CACHE_DIR = "./cache"

SGD_LR = 0.001
ADAM_LR = 0.0005
TOP_LAYER_LR = 0.05
DEFAULT_SEED = 31


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--features", default=FEATURES_DIR, help="folder of .mat feature files")
    p.add_argument("--labels", default=LABELS_CSV,
                   help="labels_concensus.csv (v1.8) or labels_consensus.csv (v1.11 and later)")
    p.add_argument("--unlabeled-features", default=UNLABELED_FEATURES_DIR,
                   help="folder of unlabelled .mat feature files (for -unlabel N)")
    p.add_argument("--cache-dir", default=CACHE_DIR, help="where the chunk caches are kept")
    p.add_argument("--cache-dtype", choices=CACHE_DTYPES, default="float32",
                   help="float16 halves the cache (the features are clipped to ±3)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="numpy, torch and k-means seed")
    p.add_argument("--compile", choices=COMPILE_MODES, default="auto",
                   help="compile the encoder with torch.compile for training: auto (default) "
                        f"on the CPU fast path for runs of at least {COMPILE_MIN_BATCHES['fp32']} "
                        f"full batches in fp32 ({COMPILE_MIN_BATCHES['bf16']} in bf16) when a C++ "
                        "compiler is present; on; off")
    p.add_argument("--val-split", default="auto",
                   help="validation split: auto (default) takes Validation (v1.8) if the labels "
                        "file has it, else Development (v1.11 and later)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted training from its last completed epoch")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a checkpoint that already exists under this run's name")
    args = p.parse_args(argv)
    if args.resume and args.overwrite:
        p.error("--resume continues a run and --overwrite starts it again: give one of them")
    return args


# Each file of a run: its name is the checkpoint's with the suffix in place of ".pth.tar".
RUN_FILES = {"checkpoint": ".pth.tar", "resume": "_resume.pth.tar", "cluster_log": "_clusters.npy",
             "history": "_history.json", "nmi_val_plot": "_NMI_ValLoss.png",
             "train_plot": "_TrainLoss.png"}


class Run:
    """Where one training run keeps its files: the released checkpoint name and its companions."""

    def __init__(self, args):
        name = checkpoint_name(args.epochs, args.batch_size, args.num_clusters, args.emo_attr,
                               args.model_type, args.unlabel_size)
        self.stem = os.path.join(args.model_dir, name[:-len(".pth.tar")])
        for key, suffix in RUN_FILES.items():
            setattr(self, key, self.stem + suffix)

    def files(self):
        return [getattr(self, key) for key in RUN_FILES]

    def check_not_taken(self, resume, overwrite):
        """Refuse to start over a checkpoint this run did not write: finished work
        (the shipped demo models, an earlier run) is never replaced without being asked."""
        if resume or overwrite or not os.path.exists(self.checkpoint):
            return
        hint = ("--resume to continue its interrupted training, " if os.path.exists(self.resume)
                else "")
        raise UserError(f"{self.checkpoint} already holds a checkpoint; not replacing it. Use "
                        f"{hint}--overwrite to train it again from scratch, or --model-dir DIR to "
                        "train into another folder")


# --- method §6 step 2 ------------------------------------------------------------------
@torch.no_grad()
def compute_chunk_features(model, cache, batch_size, device, bf16, desc="features"):
    """The cluster output (256-d, head off) of every chunk of every turn, in corpus order."""
    model = evaluation_copy(model)
    out = np.empty((len(cache) * CHUNKS_PER_TURN, model.classifier[0].out_features), np.float32)
    for idx, chunks in progress(batches(cache, np.arange(len(cache)), batch_size),
                                desc=desc, total=-(-len(cache) // batch_size), leave=False):
        cluster, _, _ = evaluate(model, chunks, device, bf16)
        out[idx[0] * CHUNKS_PER_TURN:(idx[-1] + 1) * CHUNKS_PER_TURN] = cluster.float().cpu().numpy()
    return out


# --- method §6 steps 3–4 -------------------------------------------------------------
def cluster_chunks(features, n_clusters, rng, device=None):
    """k-means with a new random seed each epoch; each chunk's cluster is its pseudo-label.
    It runs on the training's CUDA device when faiss can, else on the CPU."""
    seed = int(rng.integers(0, 2**31 - 1))
    use_gpu, gpu_index = kmeans_on_gpu(device)
    assignment, _ = run_kmeans(features, n_clusters, seed, use_gpu, gpu_index)
    return assignment


# --- method §6 step 7 ------------------------------------------------------------------
def make_optimizers(model):
    """SGD and Adam over the model's parameters, made once while the cluster head is off."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=SGD_LR), torch.optim.Adam(params, lr=ADAM_LR)


def train_one_epoch(model, cache, drawn, assignment, optimizers, batch_size, device, bf16,
                    labels=None, triplet_gen=None, epoch=0, desc="train"):
    """Joint training over the sampled turns; returns the mean loss over batches.

    With `labels` None only the cluster path trains (cross-entropy [+ triplet]),
    the regression head frozen: the unsupervised stage of the semi-supervised variant.
    """
    model.train()
    top_opt = torch.optim.SGD(model.top_layer_class.parameters(), lr=TOP_LAYER_LR)
    all_opts = list(optimizers) + [top_opt]
    frozen = [] if labels is not None else \
        list(model.emo_regressor.parameters()) + list(model.top_layer_attri.parameters())
    for p in frozen:
        p.requires_grad_(False)
    pseudo = torch.from_numpy(assignment.reshape(-1, CHUNKS_PER_TURN))
    total, n = 0.0, 0
    try:
        bar = progress(batches(cache, drawn, batch_size, labels), desc=desc,
                       total=-(-len(drawn) // batch_size), leave=False)
        for step, item in enumerate(bar):
            idx, chunks = item[0], item[1].to(device, non_blocking=True)
            target = pseudo[idx].reshape(-1).to(device)
            with autocast(device, bf16):
                cluster, attri, emb = model(chunks)
            loss = F.cross_entropy(cluster.float(), target)
            if labels is not None:
                y = item[2].to(device).repeat_interleave(CHUNKS_PER_TURN)
                loss = loss + ccc_loss(attri, y)
            if triplet_gen is not None:
                loss = loss + triplet_loss(emb, triplet_indices(triplet_gen))
            if not torch.isfinite(loss):
                raise UserError(f"the training loss became {loss.item()} at epoch {epoch + 1}, "
                                f"batch {step + 1}; training stopped, the last saved checkpoint "
                                "is untouched")
            for opt in all_opts:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in all_opts:
                opt.step()
            total += loss.item()
            n += 1
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return total / max(n, 1)


# --- method §6 step 9 ------------------------------------------------------------------
@torch.no_grad()
def validate(model, data, batch_size, device, bf16, rng):
    """Mean over batches (random order, B whole turns) of the chunk-level CCC loss."""
    model = evaluation_copy(model)
    order = rng.permutation(len(data))
    losses = []
    for _, chunks, y in progress(batches(data.cache, order, batch_size, data.norm_labels),
                                 desc="validation", total=-(-len(order) // batch_size), leave=False):
        _, attri, _ = evaluate(model, chunks, device, bf16)
        losses.append(ccc_loss(attri, y.to(device).repeat_interleave(CHUNKS_PER_TURN)).item())
    return float(np.mean(losses))


# --- method §6 step 10 -----------------------------------------------------------------
def saved_epoch(history):
    """The epoch (1-based) whose checkpoint was kept: the first with the lowest validation loss."""
    return int(np.argmin(history["val_loss"])) + 1


def plot_trends(history, run, title):
    """NMI and validation loss per epoch in one PNG, training loss in another; both name
    the run and mark the saved epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["train_loss"]) + 1)
    best = saved_epoch(history)
    nmis = [np.nan if v is None else v for v in history["nmi"]]
    fig, ax1 = plt.subplots(figsize=(6.4, 4.2))
    ax1.plot(epochs, history["val_loss"], "s-", color="tab:red", label="validation CCC loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("validation CCC loss", color="tab:red")
    ax1.axvline(best, color="grey", linestyle=":", label=f"saved epoch ({best})")
    if np.isfinite(nmis).any():
        ax2 = ax1.twinx()
        ax2.plot(epochs, nmis, "o-", color="tab:blue", label="NMI t-1/t")
        ax2.set_ylabel("NMI between consecutive clusterings", color="tab:blue")
        subtitle = "Cluster stability (NMI) and validation loss"
    else:
        subtitle = "Validation loss (NMI needs two epochs)"
    ax1.legend(loc="best", fontsize=8)
    fig.suptitle(f"{title}\n{subtitle}", fontsize=10)
    fig.tight_layout()
    save_figure(fig, run.nmi_val_plot)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(epochs, history["train_loss"], "o-", label="supervised stage")
    if any(v is not None for v in history.get("unsup_loss", [])):
        ax.plot(epochs, [np.nan if v is None else v for v in history["unsup_loss"]], "^-",
                label="unsupervised stage")
    ax.axvline(best, color="grey", linestyle=":", label=f"saved epoch ({best})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (mean over batches)")
    ax.legend(fontsize=8)
    fig.suptitle(f"{title}\nTraining loss", fontsize=10)
    fig.tight_layout()
    save_figure(fig, run.train_plot)
    plt.close("all")


def run_title(args):
    """What a plot is of: model type, attribute, K, epochs (and the unlabelled turns)."""
    unlabel = f", {args.unlabel_size} unlabelled turns" if args.unlabel_size else ""
    epochs = f"{args.epochs} epoch{'' if args.epochs == 1 else 's'}"
    return (f"{args.model_type}, {args.emo_attr}, K = {args.num_clusters}, {epochs}, "
            f"batch {args.batch_size}{unlabel}")


def save_figure(fig, path):
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


# --- data -------------------------------------------------------------------------------
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


def unlabelled_pool(args, norm):
    """The N unlabelled turns of the pool, chunked into a cache."""
    files = unlabelled_files(args.unlabeled_features, args.unlabel_size, args.num_clusters)
    return ChunkCache.open_or_build(args.cache_dir, "Unlabeled", files, norm["feat_mean"],
                                    norm["feat_std"], args.cache_dtype)


def check_cluster_count(n_turns, k, what):
    if n_turns * CHUNKS_PER_TURN < k:
        raise UserError(f"{what} has {n_turns} turn(s), {n_turns * CHUNKS_PER_TURN} chunks: "
                        f"too few for -nc {k} clusters")


# --- the training run --------------------------------------------------------------------
def train(args):
    device = pick_device(args.device)
    bf16 = use_bf16(args.precision, device)
    configure_backends(device, bf16)
    seed_everything(args.seed)
    rng = np.random.default_rng(args.seed)
    triplet_gen = torch.Generator().manual_seed(args.seed) if args.model_type == "Temp-Triplet" else None
    run = Run(args)
    run.check_not_taken(args.resume, args.overwrite)

    norm = load_norm_term(args.norm_dir, (args.emo_attr,))
    val_split = validation_split(args.labels, args.val_split)
    train_set = LabelledTurns(TRAIN_SPLIT, args.labels, args.features, norm, args.emo_attr,
                              args.cache_dir, args.cache_dtype)
    val_set = LabelledTurns(val_split, args.labels, args.features, norm, args.emo_attr,
                            args.cache_dir, args.cache_dtype)
    check_cluster_count(len(train_set), args.num_clusters, "the Train split")
    unlabelled = unlabelled_pool(args, norm) if args.unlabel_size else None

    model = build_model(args.model_type, args.num_clusters)
    if use_channels_last(args.precision):
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device)
    compiled = use_compile(args.compile, device, args.precision,
                           args.epochs * (len(train_set) // args.batch_size), bf16)
    if compiled:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.abspath(os.path.join(args.cache_dir,
                                                                                       "inductor")))
        model.compile_encoder()
    model.remove_cluster_head()
    optimizers = make_optimizers(model)
    history = {"train_loss": [], "unsup_loss": [], "val_loss": [], "nmi": [], "seconds": []}
    cluster_log, best, start = [], float("inf"), 0
    if args.resume:
        start, best, history, cluster_log = resume_state(run, model, optimizers, rng, triplet_gen)
        print(f"resuming {run.checkpoint} after epoch {start}")
    check_training_room(args.model_dir, run.files(), model, len(train_set), args.epochs)

    print(f"training {args.model_type} for {args.emo_attr}: {len(train_set)} Train, {len(val_set)} "
          f"{val_split} turns, {args.num_clusters} clusters, {args.epochs} epochs, batch {args.batch_size}"
          f"{', ' + str(args.unlabel_size) + ' unlabelled turns' if unlabelled else ''}, on {device}"
          f"{' (bf16' if bf16 else ' (fp32'}{', compiled encoder)' if compiled else ')'}")
    for epoch in range(start, args.epochs):
        t0 = time.time()
        unsup_loss = None
        if unlabelled is not None:
            unsup_loss = unsupervised_stage(model, unlabelled, optimizers, args, device, bf16, rng,
                                            triplet_gen, epoch)
        # Steps 1–4: cluster head off, chunk features, k-means pseudo-labels.
        model.remove_cluster_head()
        feats = compute_chunk_features(model, train_set.cache, args.batch_size, device, bf16)
        assignment = cluster_chunks(feats, args.num_clusters, rng, device)
        # Step 5: sentence-level uniform sampling of whole turns.
        drawn = sentence_uniform_sample(assignment, args.num_clusters, rng)
        # Steps 6–7: fresh cluster head, joint training.
        model.restore_cluster_head()
        train_loss = train_one_epoch(model, train_set.cache, drawn, assignment, optimizers,
                                     args.batch_size, device, bf16, train_set.norm_labels,
                                     triplet_gen, epoch, desc=f"epoch {epoch + 1}")
        # Step 8: NMI against the previous epoch's clustering.
        epoch_nmi = nmi(cluster_log[-1], assignment) if cluster_log else None
        cluster_log.append(assignment.astype(np.int32))
        # Step 9: validation; checkpoint at the first epoch and on improvement.
        val_loss = validate(model, val_set, args.batch_size, device, bf16, rng)
        improved = epoch == 0 or val_loss < best
        if improved:
            best = val_loss
            save_torch(run.checkpoint, {"arch": ARCH, "state_dict": released_state_dict(model)})
        for key, value in (("train_loss", train_loss), ("unsup_loss", unsup_loss),
                           ("val_loss", val_loss), ("nmi", epoch_nmi), ("seconds", time.time() - t0)):
            history[key].append(value)
        save_epoch_state(run, model, optimizers, epoch, best, history, cluster_log, rng, triplet_gen)
        print(f"epoch {epoch + 1}/{args.epochs}  train loss {train_loss:.4f}"
              f"{f'  unsupervised loss {unsup_loss:.4f}' if unsup_loss is not None else ''}"
              f"  val CCC loss {val_loss:.4f}  NMI {'-' if epoch_nmi is None else f'{epoch_nmi:.3f}'}"
              f"  {time.time() - t0:.0f}s{'  saved' if improved else ''}", flush=True)
    plot_trends(history, run, run_title(args))
    print(f"best validation CCC loss {best:.4f}\ncheckpoint: {run.checkpoint}\n"
          f"cluster log: {run.cluster_log}\nhistory: {run.history}\n"
          f"plots: {run.nmi_val_plot}, {run.train_plot}")
    return run


def unsupervised_stage(model, pool, optimizers, args, device, bf16, rng, triplet_gen, epoch):
    """Semi-supervised variant: cluster the unlabelled turns and train the cluster path only,
    stepping the model's SGD and the fresh top-layer SGD (not Adam)."""
    model.remove_cluster_head()
    feats = compute_chunk_features(model, pool, args.batch_size, device, bf16, desc="unlabelled features")
    assignment = cluster_chunks(feats, args.num_clusters, rng, device)
    drawn = sentence_uniform_sample(assignment, args.num_clusters, rng)
    model.restore_cluster_head()
    sgd = optimizers[0]   # the authors' release: Adam does not step in this stage (method §6)
    return train_one_epoch(model, pool, drawn, assignment, [sgd], args.batch_size, device,
                           bf16, None, triplet_gen, epoch, desc=f"epoch {epoch + 1} unlabelled")


# --- resuming -----------------------------------------------------------------------------
def save_epoch_state(run, model, optimizers, epoch, best, history, cluster_log, rng, triplet_gen):
    """Everything needed to continue after this epoch; each file replaced atomically."""
    save_npy(run.cluster_log, np.stack(cluster_log))
    save_json(run.history, history)
    save_torch(run.resume, {
        "epoch": epoch + 1, "best_val_loss": best,
        "state_dict": released_state_dict(model),
        "sgd": optimizers[0].state_dict(), "adam": optimizers[1].state_dict(),
        "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "triplet_rng": triplet_gen.get_state() if triplet_gen is not None else None})


def resume_state(run, model, optimizers, rng, triplet_gen):
    if not os.path.isfile(run.resume):
        raise UserError(f"--resume: no interrupted training to continue ({run.resume} not found)")
    state = read_checkpoint(run.resume)
    model.restore_cluster_head()
    model.load_state_dict(canonical_state_dict(state["state_dict"]))
    model.remove_cluster_head()
    optimizers[0].load_state_dict(state["sgd"])
    optimizers[1].load_state_dict(state["adam"])
    rng.bit_generator.state = state["numpy_rng"]
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if triplet_gen is not None and state["triplet_rng"] is not None:
        triplet_gen.set_state(state["triplet_rng"])
    epoch = state["epoch"]
    try:
        with open(run.history) as f:
            history = json.load(f)
        cluster_log = list(np.load(run.cluster_log, allow_pickle=False))
    except (OSError, ValueError) as err:
        raise UserError(f"--resume: cannot read the training history or cluster log beside "
                        f"{run.resume} ({err}); start the training again without --resume")
    # A kill between writing these and the resume file leaves them one epoch ahead.
    history = {k: v[:epoch] for k, v in history.items()}
    return epoch, state["best_val_loss"], history, cluster_log[:epoch]


def after_full_disk(err):
    """What to do once space is freed, from the run's files left beside the one not written."""
    longest_first = sorted(RUN_FILES.values(), key=len, reverse=True)
    stem = next((err.path[:-len(s)] for s in longest_first if err.path.endswith(s)), None)
    if stem and os.path.isfile(stem + RUN_FILES["resume"]):
        return ("Free space, then run the same command again with --resume: the checkpoint and "
                "resume state of the completed epochs are intact, and it continues after them.")
    if stem and os.path.isfile(stem + RUN_FILES["checkpoint"]):
        return ("Free space, then run the same command again with --overwrite: the first epoch's "
                "checkpoint was saved, but not its resume state.")
    return AGAIN


def main(argv=None):
    args = parse_args(argv)
    train(args)


if __name__ == "__main__":
    run_cli(main, disk_full=after_full_disk)
