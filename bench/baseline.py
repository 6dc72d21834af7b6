"""The original design, the baseline every ratio compares against: fp32, NCHW, no autocast, each
turn's .mat re-read once per chunk, synchronous batches, prediction one file and one model at a time."""
import os

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F

import main as train_main
import online_testing
from bench import EMOTION
from bench.epoch import StageClock, cluster_and_sample, epoch_result, limit_turns
from deepemocluster.features import chunk_starts, chunk_turn, extract_features, load_norm_term, pad_short_turn
from deepemocluster.labels import feature_paths, read_labels
from model import build_model, load_model, triplet_indices, triplet_loss
from deepemocluster.compute import Settings
from utils import CHUNKS_PER_TURN, EMOTIONS, FEATURE_VAR, FRAMES_PER_CHUNK, ccc_loss, ccc_metric


# --- the baseline data path (the original Dataset) --------------------------------------
class PerChunkReader:
    """The original data path: every chunk re-reads its turn's .mat, normalises it and slices it."""

    def __init__(self, paths, feature_norm):
        self.paths, self.feature_norm = paths, feature_norm

    def __len__(self):
        return len(self.paths)

    def chunk(self, turn, i):
        feat = np.asarray(scipy.io.loadmat(self.paths[turn])[FEATURE_VAR], dtype=np.float32)
        feat = pad_short_turn(self.feature_norm.apply(feat))
        start = chunk_starts(feat.shape[0])[i]
        return feat[start:start + FRAMES_PER_CHUNK]

    def turn(self, turn):
        return np.stack([self.chunk(turn, i) for i in range(CHUNKS_PER_TURN)])


def baseline_batches(reader, order, batch_size, labels=None):
    """(indices, chunks[, labels]) of whole turns, read synchronously, no prefetch, no cache."""
    order = np.asarray(order)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        chunks = torch.from_numpy(np.stack([reader.turn(int(t)) for t in idx]))
        yield (idx, chunks) if labels is None else (idx, chunks, torch.from_numpy(labels[idx]))


# --- models ----------------------------------------------------------------------------
def model_pair(temporal_type, n_clusters, device, channels_last, seed):
    """A fast-path model and an NCHW fp32 baseline copy with identical weights."""
    torch.manual_seed(seed)
    base = build_model(temporal_type, n_clusters)
    fast = build_model(temporal_type, n_clusters)
    fast.load_state_dict(base.state_dict())
    if channels_last:
        fast = fast.to(memory_format=torch.channels_last)
    return fast.to(device), base.to(device)


# --- one training epoch ----------------------------------------------------------------------
@torch.no_grad()
def baseline_chunk_features(model, reader, batch_size, device):
    """compute_chunk_features of the original: fp32, NCHW, per-chunk .mat reads."""
    model.eval()
    out = np.empty((len(reader) * CHUNKS_PER_TURN, model.classifier[0].out_features), np.float32)
    for idx, chunks in baseline_batches(reader, np.arange(len(reader)), batch_size):
        cluster, _, _ = model(chunks.to(device))
        out[idx[0] * CHUNKS_PER_TURN:(idx[-1] + 1) * CHUNKS_PER_TURN] = cluster.float().cpu().numpy()
    return out


def baseline_train_one_epoch(model, reader, drawn, assignment, optimizers, batch_size, device,
                             labels, triplet_gen):
    """main.train_one_epoch step for step, on the baseline data path, fp32 and NCHW."""
    model.train()
    top_opt = torch.optim.SGD(model.top_layer_class.parameters(), lr=train_main.TOP_LAYER_LR)
    all_opts = list(optimizers) + [top_opt]
    pseudo = torch.from_numpy(assignment.reshape(-1, CHUNKS_PER_TURN))
    total, n = 0.0, 0
    for idx, chunks, y in baseline_batches(reader, drawn, batch_size, labels):
        chunks = chunks.to(device)
        target = pseudo[idx].reshape(-1).to(device)
        cluster, attri, emb = model(chunks)
        loss = F.cross_entropy(cluster.float(), target)
        loss = loss + ccc_loss(attri, y.to(device).repeat_interleave(CHUNKS_PER_TURN))
        if triplet_gen is not None:
            loss = loss + triplet_loss(emb, triplet_indices(triplet_gen))
        for opt in all_opts:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in all_opts:
            opt.step()
        total += loss.item()
        n += 1
    return total / max(n, 1)


@torch.no_grad()
def baseline_validate(model, reader, labels, batch_size, device, rng):
    """main.validate of the original: random order, B whole turns per batch, mean of the
    batches' chunk-level CCC losses; fp32, NCHW, per-chunk .mat reads."""
    model.eval()
    order = rng.permutation(len(reader))
    losses = []
    for _, chunks, y in baseline_batches(reader, order, batch_size, labels):
        _, attri, _ = model(chunks.to(device))
        losses.append(ccc_loss(attri, y.to(device).repeat_interleave(CHUNKS_PER_TURN)).item())
    return float(np.mean(losses))


def baseline_epoch(model, reader, train_labels, val_reader, val_labels, optimizers, n_clusters, batch,
                   device, rng, triplet_gen, train_batches=0):
    """The same epoch in the original design (k-means and sampling are the same calls)."""
    clock = StageClock(device)
    feats, assignment, drawn = cluster_and_sample(
        clock, model, lambda: baseline_chunk_features(model, reader, batch, device), n_clusters, rng,
        Settings(device))
    turns = limit_turns(drawn, train_batches, batch)
    with clock("training"):
        loss = baseline_train_one_epoch(model, reader, turns, assignment, optimizers, batch, device,
                                        train_labels, triplet_gen)
    with clock("validation"):
        val_loss = baseline_validate(model, val_reader, val_labels, batch, device, rng)
    return epoch_result(clock, feats, assignment, drawn, turns, loss, val_loss)


# --- online testing and prediction ------------------------------------------------------------
def baseline_test_ccc(ckpt, corpus, args, device):
    """The work of test_ccc in the original design: fp32, NCHW, per-chunk reads."""
    model = load_model(ckpt, args.model_type, args.num_clusters).to(device).eval()
    norm = load_norm_term(corpus.norm_dir, (EMOTION,))
    stems, labels = read_labels(corpus.labels, "Test1", (EMOTION,))
    reader = PerChunkReader(feature_paths(corpus.features, stems), norm["features"])
    pred = np.empty(len(stems))
    with torch.no_grad():
        for idx, chunks in baseline_batches(reader, np.arange(len(stems)), online_testing.TEST_BATCH):
            pred[idx] = model.predict_turns(chunks.to(device)).float().cpu().numpy()
    pred = pred * norm[f"{EMOTION}_std"] + norm[f"{EMOTION}_mean"]
    return ccc_metric(pred, labels[EMOTION]), pred


@torch.no_grad()
def baseline_predict(wavs, models, norm, device):
    """The original prediction: for each file extract, then model 1, 2, 3 on that file alone."""
    rows = []
    for wav in wavs:
        feat = extract_features(wav)
        x = torch.from_numpy(chunk_turn(norm["features"].apply(feat)))
        x = x.unsqueeze(0).to(device)
        scores = []
        for model, emo in zip(models, EMOTIONS):
            y = float(model.predict_turns(x).float().cpu()[0])
            scores.append(y * norm[f"{emo}_std"] + norm[f"{emo}_mean"])
        rows.append((os.path.basename(wav),) + tuple(scores))
    return rows
