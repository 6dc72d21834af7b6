"""Train Temporal-Enhanced DeepEmoCluster for one attribute (method §6).

    python main.py -ep 30 -batch 64 -emo Val -nc 10 -mt Temp-Triplet

Every epoch: chunk features with the cluster head off → faiss k-means →
pseudo-labels → sentence-level uniform sampling → joint training (cross-
entropy + CCC loss [+ triplet]) → NMI to the previous clustering →
validation CCC loss → checkpoint when it improves.

    torchrun --nproc_per_node N main.py …   # the same training over N processes (deepemocluster/distributed.py)
"""
import argparse
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from deepemocluster import distributed, fine_tuning
from clustering import check_cluster_count, kmeans_on_gpu, nmi, run_kmeans
from dataloader import CACHE_DTYPES, ChunkCache, LabelledTurns, batches
from deepemocluster.corpus import (CACHE_DIR, FEATURES_DIR, LABELS_CSV, UNLABELED_FEATURES_DIR,
                                   unlabelled_files)
from deepemocluster.disk_space import check_training_room
from deepemocluster.distributed import gather_turns, mean_over_processes
from deepemocluster.features import load_norm_term
from deepemocluster.labels import validation_split
from model import (ARCH, build_model, evaluate, evaluation_copy, released_state_dict, triplet_indices,
                   triplet_loss)
from deepemocluster.training_files import (RUN_FILES, TrainingFiles, TrainingState, epoch_count, plot_trends,
                                           resume_state, run_title, save_epoch_state, where_it_ran)
from deepemocluster.compute import (COMPILE_MIN_BATCHES, COMPILE_MODES, autocast, configure_backends,
                     seed_everything, use_channels_last, use_compile)
from utils import (CHUNKS_PER_TURN, FREE_SPACE_AND_RERUN, TRAIN_SPLIT, UserError, add_model_args, at_least,
                   ccc_loss, progress, run_cli, save_torch, sentence_uniform_sample)

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
                        "compiler is present; on; off. Off under torchrun")
    p.add_argument("--val-split", default="auto",
                   help="validation split: auto (default) takes Validation (v1.8) if the labels "
                        "file has it, else Development (v1.11 and later)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted training from its last completed epoch")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a checkpoint that already exists under this run's name")
    p.add_argument("--dist-backend", choices=distributed.BACKENDS, default="auto",
                   help="under torchrun: the collectives' backend, auto (default) nccl on GPUs, "
                        "gloo on the CPU")
    p.add_argument("--dist-timeout", type=at_least(1, "--dist-timeout"),
                   default=distributed.DEFAULT_TIMEOUT_MINUTES,
                   help="under torchrun: minutes a process waits for the others before the run "
                        f"stops (default {distributed.DEFAULT_TIMEOUT_MINUTES})")
    fine_tuning.add_flags(p)
    args = p.parse_args(argv)
    fine_tuning.check_flags(p, args)
    if args.resume and args.overwrite:
        p.error("--resume continues a run and --overwrite starts it again: give one of them")
    return args


def share_of(settings):
    """What a process reads of each batch: all of it, or under torchrun its share."""
    return lambda span: distributed.share(span, settings)


def batch_span(order, step, batch_size):
    """The turns of batch `step` (the global batch under torchrun)."""
    return order[step * batch_size:(step + 1) * batch_size]


# --- method §6 step 2 ------------------------------------------------------------------
@torch.no_grad()
def compute_chunk_features(model, cache, batch_size, settings, desc="features"):
    """The cluster output (256-d, head off) of every chunk of every turn, in corpus order.
    Under torchrun each process encodes its share of every batch, and rank 0 gets them all
    (the others get None)."""
    model = evaluation_copy(model)
    order = np.arange(len(cache))
    out = (np.empty((len(cache) * CHUNKS_PER_TURN, model.classifier[0].out_features), np.float32)
           if settings.is_main else None)
    for step, (idx, chunks) in enumerate(progress(
            batches(cache, order, batch_size, device=settings.device, part=share_of(settings)),
            desc=desc, total=-(-len(cache) // batch_size), leave=False)):
        cluster, _, _ = evaluate(model, chunks, settings)
        if settings.distributed:
            cluster = gather_turns(cluster, len(batch_span(order, step, batch_size)), settings,
                                   CHUNKS_PER_TURN)
        if out is not None:
            start = step * batch_size * CHUNKS_PER_TURN
            out[start:start + len(cluster)] = cluster.float().cpu().numpy()
    return out


# --- method §6 steps 3–4 -------------------------------------------------------------
def cluster_chunks(features, n_clusters, rng, settings):
    """k-means with a new random seed each epoch; each chunk's cluster is its pseudo-label.
    It runs on the training's CUDA device when faiss can, else on the CPU; under torchrun
    once, on rank 0, which shares the assignment (every process draws the seed, so that all
    keep the same random stream)."""
    seed = int(rng.integers(0, 2**31 - 1))
    assignment = None
    if settings.is_main:
        use_gpu, gpu_index = kmeans_on_gpu(settings.device)
        assignment, _ = run_kmeans(features, n_clusters, seed, use_gpu, gpu_index)
    if settings.distributed:
        assignment = distributed.broadcast_from_main(assignment)
    return assignment


# --- method §6 step 7 ------------------------------------------------------------------
def make_optimizers(model):
    """SGD and Adam over the model's parameters, made once while the cluster head is off."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=SGD_LR), torch.optim.Adam(params, lr=ADAM_LR)


def train_one_epoch(state, cache, drawn, assignment, batch_size, settings, labels=None, desc="train"):
    """Joint training of the model of `state` (TrainingState, in its epoch state.epoch) over the
    sampled turns; returns the mean loss over batches.

    With `labels` None only the cluster path trains (cross-entropy [+ triplet]),
    the regression head frozen: the unsupervised stage of the semi-supervised variant, which
    steps SGD but not Adam, as the authors' release does (method §6).
    Under torchrun each process trains on its share of every batch, the loss that of the
    whole batch (global_batch_loss), the model under DistributedDataParallel.
    """
    device, model, epoch, triplet_gen = settings.device, state.model, state.epoch, state.triplet_gen
    model.train()
    top_opt = torch.optim.SGD(model.top_layer_class.parameters(), lr=TOP_LAYER_LR)
    all_opts = list(state.optimizers if labels is not None else state.optimizers[:1]) + [top_opt]
    frozen = [] if labels is not None else \
        list(model.emo_regressor.parameters()) + list(model.top_layer_attri.parameters())
    for p in frozen:
        p.requires_grad_(False)
    pseudo = torch.from_numpy(assignment.reshape(-1, CHUNKS_PER_TURN))
    total, n = 0.0, 0
    try:
        net = distributed.wrap(model, settings)
        bar = progress(batches(cache, drawn, batch_size, labels, device=device, part=share_of(settings)),
                       desc=desc, total=-(-len(drawn) // batch_size), leave=False)
        for step, item in enumerate(bar):
            idx, chunks = item[0], item[1].to(device, non_blocking=True)
            target = pseudo[idx].reshape(-1).to(device)
            with autocast(device, settings.bf16), \
                    distributed.dropout_stream(settings, epoch, labels is None, step):
                cluster, attri, emb = net(chunks)
            triples = triplet_indices(triplet_gen) if triplet_gen is not None else None
            if settings.distributed:
                span = batch_span(drawn, step, batch_size)
                loss = global_batch_loss(cluster, attri, emb, target,
                                         None if labels is None else labels[span], triples, len(span),
                                         settings)
                whole = mean_over_processes(loss)
            else:
                loss = F.cross_entropy(cluster.float(), target)
                if labels is not None:
                    y = item[2].to(device).repeat_interleave(CHUNKS_PER_TURN)
                    loss = loss + ccc_loss(attri, y)
                if triples is not None:
                    loss = loss + triplet_loss(emb, triples)
                whole = loss
            if not torch.isfinite(whole):
                raise UserError(f"the training loss became {whole.item()} at epoch {epoch + 1}, "
                                f"batch {step + 1}; training stopped, the last saved checkpoint "
                                "is untouched")
            for opt in all_opts:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            distributed.wait_for_gradients(settings)
            for opt in all_opts:
                opt.step()
            total += whole.item()
            n += 1
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return total / max(n, 1)


def global_batch_loss(cluster, attri, emb, target, labels, triples, n_turns, settings):
    """This process's term of the joint loss of a batch of `n_turns` turns split across the
    processes. The terms average over the processes to the loss of the whole batch, so the
    gradient DDP averages is that loss's gradient: cross-entropy and triplet loss enter as
    N × this share's sum / the whole batch's count, the CCC (which does not split over shares)
    over the predictions of the whole batch, gathered from every process (`labels`: the whole
    batch's, or None)."""
    world = settings.world_size
    loss = world * F.cross_entropy(cluster.float(), target, reduction="sum") / (n_turns * CHUNKS_PER_TURN)
    if labels is not None:
        whole = gather_turns(attri, n_turns, settings)
        y = torch.from_numpy(labels).to(whole.device).repeat_interleave(CHUNKS_PER_TURN)
        loss = loss + ccc_loss(whole, y)
    if triples is not None:
        loss = loss + world * triplet_loss(emb, triples, "sum") / (n_turns * len(triples))
    return loss


# --- method §6 step 9 ------------------------------------------------------------------
@torch.no_grad()
def validate(model, data, batch_size, settings, rng):
    """Mean over batches (random order, B whole turns) of the chunk-level CCC loss. Under
    torchrun each process encodes its share of every batch; the loss of each batch is that of
    the gathered predictions, the same in every process."""
    model = evaluation_copy(model)
    order = rng.permutation(len(data))
    losses = []
    for step, (_, chunks, y) in enumerate(progress(
            batches(data.cache, order, batch_size, data.norm_labels, device=settings.device,
                    part=share_of(settings)),
            desc="validation", total=-(-len(order) // batch_size), leave=False)):
        _, attri, _ = evaluate(model, chunks, settings)
        if settings.distributed:
            span = batch_span(order, step, batch_size)
            attri = gather_turns(attri, len(span), settings)
            y = torch.from_numpy(data.norm_labels[span])
        losses.append(ccc_loss(attri, y.to(settings.device).repeat_interleave(CHUNKS_PER_TURN)).item())
    return float(np.mean(losses))


# --- data -------------------------------------------------------------------------------
def unlabelled_pool(args, norm, build_cache=True):
    """The N unlabelled turns of the pool, chunked into a cache."""
    files = unlabelled_files(args.unlabeled_features, args.unlabel_size, args.num_clusters)
    return ChunkCache.open_or_build(args.cache_dir, "Unlabeled", files, norm["features"], args.cache_dtype,
                                    build_cache)


# --- the training run --------------------------------------------------------------------
def train(args):
    """One training run: in this process, or under torchrun in each of its processes."""
    settings = distributed.setup(args.device, args.precision, args.dist_backend, args.dist_timeout)
    files = TrainingFiles.from_args(args)
    with distributed.stopping_cleanly(settings, files.resume):
        train_run(args, settings, files)
    return files


def load_data(args, settings):
    """The Train and validation splits (and the unlabelled pool), each in its chunk cache;
    under torchrun rank 0 builds the caches while the others wait, then they open them."""
    val_split = validation_split(args.labels, args.val_split)
    norm = load_norm_term(args.norm_dir, (args.emo_attr,), args.labels, args.features)
    with distributed.main_first(settings):
        train_set = LabelledTurns(TRAIN_SPLIT, args.labels, args.features, norm, args.emo_attr,
                                  args.cache_dir, args.cache_dtype, build_cache=settings.is_main)
        val_set = LabelledTurns(val_split, args.labels, args.features, norm, args.emo_attr,
                                args.cache_dir, args.cache_dtype, build_cache=settings.is_main)
        check_cluster_count(len(train_set), args.num_clusters, "the Train split")
        unlabelled = unlabelled_pool(args, norm, settings.is_main) if args.unlabel_size else None
    return train_set, val_set, unlabelled


def build_training_model(args, settings, n_train):
    """The model on its device, with the cluster head off; under torchrun with global-batch
    BatchNorm. Returns (model, whether the encoder is compiled)."""
    model = build_model(args.model_type, args.num_clusters)
    if settings.distributed:
        distributed.use_global_batchnorm(model)
    if use_channels_last(args.precision):
        model = model.to(memory_format=torch.channels_last)
    model = model.to(settings.device)
    compiled = use_compile(args.compile, settings.device, args.precision,
                           args.epochs * (n_train // args.batch_size), settings.bf16)
    if compiled and settings.distributed:
        if args.compile == "on":
            raise UserError("--compile on is not supported under torchrun: the global-batch "
                            "BatchNorm exchanges statistics between the processes inside the "
                            "encoder; use --compile auto or off")
        compiled = False
    if compiled:
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.abspath(os.path.join(args.cache_dir,
                                                                                       "inductor")))
        model.compile_encoder()
    model.remove_cluster_head()
    return model, compiled


def where_it_runs(place):
    """The start-up line's account of the device, precision and processes (where_it_ran's record)."""
    precision = f"{place['precision']}{', compiled encoder' if place['compiled'] else ''}"
    if place["backend"] is None:
        return f"on {place['device']} ({precision})"
    return (f"on {place['processes']} processes ({place['backend']}, {place['device']}, "
            f"{precision}), each taking its share of every batch")


def fresh_state(model, seed, model_type):
    """The TrainingState of a run before its first epoch: the model, its optimisers, and the
    random streams from `seed` (--seed; the triplets' for Temp-Triplet only)."""
    triplet_gen = torch.Generator().manual_seed(seed) if model_type == "Temp-Triplet" else None
    return TrainingState(model, make_optimizers(model), np.random.default_rng(seed), triplet_gen)


def train_run(args, settings, files):
    configure_backends(settings.device)
    seed_everything(args.seed)
    files.check_not_taken(args.resume, args.overwrite)
    distributed.check_batch(args.batch_size, settings.world_size)
    start_point = fine_tuning.starting_point(args, settings, files.history)
    train_set, val_set, unlabelled = load_data(args, settings)
    model, compiled = build_training_model(args, settings, len(train_set))
    place = where_it_ran(settings, compiled)
    state = fresh_state(model, args.seed, args.model_type)
    fine_tuning.start_from(model, state.optimizers, start_point, args.resume)
    state.history.update(fine_tuning.record(start_point))
    if args.resume:
        resume_state(files, state)
        settings.log(f"resuming {files.checkpoint} after epoch {state.epoch}")
    check_training_room(args.model_dir, files.paths(), model, len(train_set), args.epochs)

    settings.log(f"training {args.model_type} for {args.emo_attr}: {len(train_set)} Train, {len(val_set)} "
                 f"{val_set.split} turns, {args.num_clusters} clusters, {epoch_count(args.epochs)}, batch "
                 f"{args.batch_size}{', ' + str(args.unlabel_size) + ' unlabelled turns' if unlabelled else ''}, "
                 f"{where_it_runs(place)}")
    if start_point is not None:
        settings.log(fine_tuning.describe(start_point, args.norm_dir))
    for epoch in range(state.epoch, args.epochs):
        t0 = time.time()
        fine_tuning.hold_encoder(model, epoch, start_point)
        unsup_loss = None
        if unlabelled is not None:
            unsup_loss = unsupervised_stage(state, unlabelled, args, settings)
        # Steps 1–4: cluster head off, chunk features, k-means pseudo-labels.
        model.remove_cluster_head()
        feats = compute_chunk_features(model, train_set.cache, args.batch_size, settings)
        assignment = cluster_chunks(feats, args.num_clusters, state.rng, settings)
        # Step 5: sentence-level uniform sampling of whole turns.
        drawn = sentence_uniform_sample(assignment, args.num_clusters, state.rng)
        # Steps 6–7: fresh cluster head, joint training.
        model.restore_cluster_head()
        train_loss = train_one_epoch(state, train_set.cache, drawn, assignment, args.batch_size, settings,
                                     train_set.norm_labels, desc=f"epoch {epoch + 1}")
        # Step 8: NMI against the previous epoch's clustering.
        epoch_nmi = nmi(state.cluster_log[-1], assignment) if state.cluster_log else None
        state.cluster_log.append(assignment.astype(np.int32))
        # Step 9: validation; checkpoint at the first epoch and on improvement.
        val_loss = validate(model, val_set, args.batch_size, settings, state.rng)
        improved = epoch == 0 or val_loss < state.best
        if improved:
            state.best = val_loss
        state.end_epoch(train_loss=train_loss, unsup_loss=unsup_loss, val_loss=val_loss, nmi=epoch_nmi,
                        seconds=time.time() - t0, ran_on=place)
        if settings.is_main:
            if improved:
                save_torch(files.checkpoint, {"arch": ARCH, "state_dict": released_state_dict(model),
                                              **fine_tuning.record(start_point)})
            save_epoch_state(files, state)
        settings.log(f"epoch {epoch + 1}/{args.epochs}  train loss {train_loss:.4f}"
                     f"{f'  unsupervised loss {unsup_loss:.4f}' if unsup_loss is not None else ''}"
                     f"  val CCC loss {val_loss:.4f}  NMI {'-' if epoch_nmi is None else f'{epoch_nmi:.3f}'}"
                     f"  {time.time() - t0:.0f}s{'  saved' if improved else ''}", flush=True)
    if settings.is_main:
        plot_trends(state.history, files, run_title(args))
    settings.log(f"best validation CCC loss {state.best:.4f}\ncheckpoint: {files.checkpoint}\n"
                 f"cluster log: {files.cluster_log}\nhistory: {files.history}\n"
                 f"plots: {files.nmi_val_plot}, {files.train_plot}")


def unsupervised_stage(state, pool, args, settings):
    """Semi-supervised variant: cluster the unlabelled turns and train the cluster path only,
    stepping the model's SGD and the fresh top-layer SGD (not Adam; train_one_epoch)."""
    model = state.model
    model.remove_cluster_head()
    feats = compute_chunk_features(model, pool, args.batch_size, settings, desc="unlabelled features")
    assignment = cluster_chunks(feats, args.num_clusters, state.rng, settings)
    drawn = sentence_uniform_sample(assignment, args.num_clusters, state.rng)
    model.restore_cluster_head()
    return train_one_epoch(state, pool, drawn, assignment, args.batch_size, settings,
                           desc=f"epoch {state.epoch + 1} unlabelled")


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
    return FREE_SPACE_AND_RERUN


def main(argv=None):
    args = parse_args(argv)
    train(args)


if __name__ == "__main__":
    run_cli(main, disk_full=after_full_disk)
