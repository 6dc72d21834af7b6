"""Temporal-Enhanced DeepEmoCluster model (method §5).

One chunk encoder ("vgg16": seven conv blocks and `cnn_out`), one of four
temporal models over the 11 chunk embeddings of a turn, and two per-chunk
heads: the cluster head (`classifier`, `top_layer_class`) and the regression
head (`emo_regressor`, `top_layer_attri`). Module names are those of the
authors' released checkpoints, so their state dicts load unchanged.
"""
import copy
import math
import os
import pickle
import zipfile

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import CHUNKS_PER_TURN, N_MELS, TEMPORAL_TYPES, UserError

ARCH = "vgg16"
ENCODER_BLOCKS = ((32, 1), (32, 1), (64, 2), (64, 2), (128, 2), (128, 2), (128, 2))
ENCODER_OUT = 128 * 2 * 4
EMBED_DIM = 256
GRU_HIDDEN = 128
TEMP_CNN_CHANNELS = 16
TEMP_CNN_KERNEL = 5
TEMP_CNN_DROPOUT = 0.3
TRANS_HEADS = 1
TRANS_FEEDFORWARD = 256
TRANS_DROPOUT = 0.3
CNN_OUT_DROPOUT = 0.5
TRIPLET_MARGIN = 1.0
TRIPLET_TRIPLES = 10
TRIPLET_WINDOW = 2
DATAPARALLEL_MODULES = ("cnn_features", "cnn_out")
PICKLE_PROTO = b"\x80"


def conv_blocks():
    """Seven Conv2d 3×3 → BatchNorm2d → ReLU blocks (indices 0, 3, …, 18 are the convs)."""
    layers, in_ch = [], 1
    for out_ch, stride in ENCODER_BLOCKS:
        layers += [nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1),
                   nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)]
        in_ch = out_ch
    return nn.Sequential(*layers)


class TempDeepEmoCluster(nn.Module):
    """Chunk encoder + temporal model + cluster head + regression head.

    Input: (turns, 11, 62, 128) normalised chunks. forward() returns the
    cluster output per chunk, the attribute prediction per chunk (turns, 11)
    and the chunk embeddings (turns, 11, 256). The subclasses below are the
    four temporal variants; this base class alone has no temporal network.

    Under bf16 autocast only the convolutions (`cnn_features`, over 99 % of the
    FLOPs) run in bf16: `cnn_out`, the temporal model and both heads stay fp32,
    since bf16 there cost valence accuracy (README, Performance).
    """

    temporal_type = None
    cnn_out_dropout = True

    def __init__(self, n_clusters):
        super().__init__()
        self.n_clusters = n_clusters
        self.cnn_features = conv_blocks()
        out = [nn.Linear(ENCODER_OUT, EMBED_DIM), nn.ReLU(inplace=True)]
        if self.cnn_out_dropout:
            out.append(nn.Dropout(CNN_OUT_DROPOUT))
        self.cnn_out = nn.Sequential(*out)
        self.build_temporal()
        self.classifier = nn.Sequential(nn.Linear(EMBED_DIM, EMBED_DIM), nn.ReLU(inplace=True))
        self.top_layer_class = nn.Linear(EMBED_DIM, n_clusters)
        self.emo_regressor = nn.Sequential(nn.Linear(EMBED_DIM, EMBED_DIM), nn.ReLU(inplace=True))
        self.top_layer_attri = nn.Linear(EMBED_DIM, 1)
        self.initialize_weights()

    def build_temporal(self):
        pass

    def temporal(self, seq):
        return seq

    def initialize_weights(self):
        """method §5: conv N(0, √(2/(k·k·out))), BatchNorm 1/0, every Linear N(0, 0.01), biases 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / n))
                if m.bias is not None:
                    m.bias.data.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.weight.data.normal_(0, 0.01)
                m.bias.data.zero_()

    # --- method §6 steps 1 and 6: the cluster head off and back on -------------
    def remove_cluster_head(self):
        """Drop `top_layer_class` and the classifier's ReLU: cluster output = 256-d Linear."""
        self.top_layer_class = None
        self.classifier = nn.Sequential(*list(self.classifier.children())[:1])

    def restore_cluster_head(self):
        """Put the ReLU back and a fresh `top_layer_class` Linear(256, K), N(0, 0.01)."""
        linear = self.classifier[0]
        self.classifier = nn.Sequential(linear, nn.ReLU(inplace=True))
        top = nn.Linear(EMBED_DIM, self.n_clusters).to(linear.weight.device, linear.weight.dtype)
        top.weight.data.normal_(0, 0.01)
        top.bias.data.zero_()
        self.top_layer_class = top

    # --- the compiled encoder (training on the fast path) ---------------------------
    def compile_encoder(self):
        """Run `cnn_features` through torch.compile in training mode: one graph per batch
        size (the full batches, and the smaller last batch of an epoch), with BatchNorm
        and ReLU fused into fewer passes over the feature maps. Evaluation mode runs
        eagerly (on a copy with BatchNorm folded, model.evaluation_copy). Not a registered
        submodule: checkpoints and copies never see it."""
        object.__setattr__(self, "_compiled_encoder", torch.compile(self.cnn_features, dynamic=False))

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_compiled_encoder", None)
        return state

    def encode(self, x):
        """The seven conv blocks, compiled where compile_encoder set that up."""
        compiled = self.__dict__.get("_compiled_encoder")
        if compiled is not None and self.training:
            try:
                return compiled(x)
            except Exception as err:  # no working C++ compiler, or an unsupported setup
                import warnings

                warnings.warn(f"torch.compile of the encoder failed ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); running eagerly",
                              stacklevel=2)
                del self.__dict__["_compiled_encoder"]
        return self.cnn_features(x)

    # --- forward ------------------------------------------------------------------
    def embed_chunks(self, chunks):
        """(turns, 11, 62, 128) → chunk embeddings (turns, 11, 256), the output of `cnn_out`.

        Chunks of 53–61 frames (whole short turns in testing, method §4) also end at 2 × 4.
        """
        turns, _, frames, _ = chunks.shape
        x = chunks.reshape(turns * CHUNKS_PER_TURN, 1, frames, N_MELS)
        if self.cnn_features[3].weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.encode(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = self.cnn_out(x.float().flatten(1))
        return x.reshape(turns, CHUNKS_PER_TURN, EMBED_DIM)

    def forward(self, chunks):
        emb = self.embed_chunks(chunks)
        with torch.autocast(device_type=emb.device.type, enabled=False):
            seq = self.temporal(emb).reshape(-1, EMBED_DIM)
            cluster = self.classifier(seq)
            if self.top_layer_class is not None:
                cluster = self.top_layer_class(cluster)
            attri = self.top_layer_attri(self.emo_regressor(seq)).reshape(-1, CHUNKS_PER_TURN)
        return cluster, attri, emb

    def predict_turns(self, chunks, embeddings=False):
        """A turn's prediction: the mean of its 11 chunk predictions (normalised scale).

        With `embeddings`, also the turn's deep temporal clustering feature: the 256-d
        output of the temporal model (for Temp-Triplet, of `cnn_out`) averaged over the
        11 chunks, the vector both heads read.
        """
        emb = self.embed_chunks(chunks)
        with torch.autocast(device_type=emb.device.type, enabled=False):
            seq = self.temporal(emb)
            attri = self.top_layer_attri(self.emo_regressor(seq.reshape(-1, EMBED_DIM)))
            pred = attri.reshape(-1, CHUNKS_PER_TURN).float().mean(dim=1)
        return (pred, seq.float().mean(dim=1)) if embeddings else pred


class TempGRU(TempDeepEmoCluster):
    """One bidirectional GRU layer: 256 in, 128 per direction."""

    temporal_type = "Temp-GRU"

    def build_temporal(self):
        self.temporal_net = nn.GRU(EMBED_DIM, GRU_HIDDEN, num_layers=1, batch_first=True,
                                   bidirectional=True)

    def temporal(self, seq):
        return self.temporal_net(seq)[0]


class TempCNN(TempDeepEmoCluster):
    """The 11×256 sequence as a one-channel image through two 5×5 conv blocks."""

    temporal_type = "Temp-CNN"

    def build_temporal(self):
        pad = TEMP_CNN_KERNEL // 2
        self.temporal_net = nn.Sequential(
            nn.Conv2d(1, TEMP_CNN_CHANNELS, TEMP_CNN_KERNEL, padding=pad),
            nn.BatchNorm2d(TEMP_CNN_CHANNELS), nn.ReLU(inplace=True),
            nn.Conv2d(TEMP_CNN_CHANNELS, 1, TEMP_CNN_KERNEL, padding=pad),
            nn.BatchNorm2d(1), nn.ReLU(inplace=True), nn.Dropout(TEMP_CNN_DROPOUT))

    def temporal(self, seq):
        return self.temporal_net(seq.unsqueeze(1)).squeeze(1)


class PositionalEncoding(nn.Module):
    """Sinusoidal positions for the 11 chunks, a (11, 1, 256) buffer, added sequence-first."""

    def __init__(self, d_model=EMBED_DIM, length=CHUNKS_PER_TURN):
        super().__init__()
        position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(length, d_model)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)
        self.register_buffer("pe", pe.unsqueeze(1))

    def forward(self, x):
        return x + self.pe[: x.size(0)]


class TempTrans(TempDeepEmoCluster):
    """Positional encoding, then one post-norm Transformer encoder layer, sequence-first."""

    temporal_type = "Temp-Trans"

    def build_temporal(self):
        self.pos_enc = PositionalEncoding()
        self.temporal_net = nn.TransformerEncoderLayer(
            d_model=EMBED_DIM, nhead=TRANS_HEADS, dim_feedforward=TRANS_FEEDFORWARD,
            dropout=TRANS_DROPOUT, activation="relu", norm_first=False, batch_first=False)

    def temporal(self, seq):
        return self.temporal_net(self.pos_enc(seq.transpose(0, 1))).transpose(0, 1)


class TempTriplet(TempDeepEmoCluster):
    """No temporal network and no Dropout in `cnn_out`: a triplet loss on the chunk
    embeddings pulls chunks that are close in time together (see triplet_loss)."""

    temporal_type = "Temp-Triplet"
    cnn_out_dropout = False


MODELS = {cls.temporal_type: cls for cls in (TempGRU, TempCNN, TempTrans, TempTriplet)}


def build_model(temporal_type, n_clusters):
    if temporal_type not in MODELS:
        raise ValueError(f"unknown temporal type {temporal_type!r}; choose from {TEMPORAL_TYPES}")
    return MODELS[temporal_type](n_clusters)


def triplet_indices(generator):
    """method §5 Temp-Triplet: 10 (anchor, positive, negative) chunk-index triples.

    Positive: within 2 chunks of the anchor (not itself); negative: any other chunk.
    """
    triples = []
    for _ in range(TRIPLET_TRIPLES):
        a = int(torch.randint(CHUNKS_PER_TURN, (1,), generator=generator))
        near = [i for i in range(a - TRIPLET_WINDOW, a + TRIPLET_WINDOW + 1)
                if i != a and 0 <= i < CHUNKS_PER_TURN]
        far = [i for i in range(CHUNKS_PER_TURN) if i != a and i not in near]
        p = near[int(torch.randint(len(near), (1,), generator=generator))]
        n = far[int(torch.randint(len(far), (1,), generator=generator))]
        triples.append((a, p, n))
    return triples


def triplet_loss(emb, triples, reduction="mean"):
    """Triplet margin loss (margin 1, L2) of every triple applied to every turn: the mean over
    turns × triples (or their sum)."""
    a, p, n = (torch.tensor(t, device=emb.device) for t in zip(*triples))
    return F.triplet_margin_loss(emb[:, a].reshape(-1, emb.shape[-1]).float(),
                                 emb[:, p].reshape(-1, emb.shape[-1]).float(),
                                 emb[:, n].reshape(-1, emb.shape[-1]).float(),
                                 margin=TRIPLET_MARGIN, p=2, reduction=reduction)


# --- checkpoints ---------------------------------------------------------------------
def checkpoint_name(epochs, batch, n_clusters, emotion, temporal_type, unlabel=0):
    """The released file name, `…_unlabel{N}` for the semi-supervised variant."""
    name = f"TempDeepEmoCluster_epoch{epochs}_batch{batch}_{n_clusters}clusters_{emotion}_{temporal_type}"
    if unlabel:
        name += f"_unlabel{unlabel}"
    return name + ".pth.tar"


def released_state_dict(model):
    """The state dict in the released layout: `cnn_features.module.*`, `cnn_out.module.*`."""
    out = {}
    for key, value in model.state_dict().items():
        head, _, rest = key.partition(".")
        out[f"{head}.module.{rest}" if head in DATAPARALLEL_MODULES else key] = value.detach().cpu()
    return out


def canonical_state_dict(state_dict):
    """Accept keys with or without the DataParallel `.module` infix, and a Transformer
    layer stored inside a one-layer TransformerEncoder (`temporal_net.layers.0.*`)."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith("module."):
            key = key[len("module."):]
        key = key.replace(".module.", ".", 1) if key.split(".")[0] in DATAPARALLEL_MODULES else key
        if key.startswith("temporal_net.layers.0."):
            key = "temporal_net." + key[len("temporal_net.layers.0."):]
        out[key] = value
    return out


def is_torch_file(path):
    """Whether a file is what torch.save writes: a zip archive, or (before PyTorch 1.6) a pickle,
    which starts with the PROTO opcode."""
    with open(path, "rb") as f:
        first = f.read(1)
    return first == PICKLE_PROTO or zipfile.is_zipfile(path)


def read_checkpoint(path):
    """Load a checkpoint file safely: tensors, strings and dicts only, no code runs."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}. Train it with main.py (see README) "
                        "or put a released checkpoint there.")
    if not is_torch_file(path):
        raise UserError(f"cannot read checkpoint {path}: the file is damaged or not a PyTorch "
                        "checkpoint (neither a zip archive nor a pickle, as torch.save writes)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        # The weights-only unpickler rejects anything that is not tensors and plain data
        # (an UnpicklingError); any other failure means a damaged or foreign file.
        if isinstance(err, pickle.UnpicklingError) or "weights_only" in str(err):
            raise UserError(f"refusing to load {path}: it holds more than tensors and plain "
                            "data (loading it would run code from the file). Use a checkpoint "
                            "written by main.py or a released one from a source you trust.")
        detail = (str(err).splitlines() or ["no detail"])[0]
        raise UserError(f"cannot read checkpoint {path}: the file is damaged or not a PyTorch "
                        f"checkpoint ({type(err).__name__}: {detail})")


def infer_checkpoint_setup(state_dict):
    """(temporal type, number of clusters) that a state dict was trained with."""
    keys = set(state_dict)
    k = state_dict["top_layer_class.weight"].shape[0] if "top_layer_class.weight" in keys else None
    if "pos_enc.pe" in keys:
        mt = "Temp-Trans"
    elif "temporal_net.weight_ih_l0" in keys:
        mt = "Temp-GRU"
    elif "temporal_net.0.weight" in keys:
        mt = "Temp-CNN"
    elif not any(key.startswith("temporal_net.") for key in keys):
        mt = "Temp-Triplet"
    else:
        mt = None
    return mt, k


def load_model(path, temporal_type, n_clusters, device="cpu"):
    """A model built from the flags with a checkpoint's weights; a mismatch is explained."""
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise UserError(f"{path} is not a TempDeepEmoCluster checkpoint (no 'state_dict')")
    state = canonical_state_dict(ckpt["state_dict"])
    found_mt, found_k = infer_checkpoint_setup(state)
    if found_mt is not None and found_mt != temporal_type:
        raise UserError(f"{path} holds a {found_mt} model, but -mt {temporal_type} was given")
    if found_k is not None and found_k != n_clusters:
        raise UserError(f"{path} was trained with {found_k} clusters, but -nc {n_clusters} was given")
    model = build_model(temporal_type, n_clusters)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise UserError(f"{path} does not fit a {temporal_type} model with {n_clusters} clusters: "
                        f"{str(err).splitlines()[0]}")
    return model.to(device).eval()


# A CPU evaluation pass of 2 turns: its largest feature map (22 chunks × 32 × 62 × 128 fp32,
# 22 MB) stays under glibc's largest mmap threshold (runtime.reuse_freed_memory), so its memory
# is reused from pass to pass instead of being page-faulted in afresh (page faults were about a
# third of a 64-turn pass's time in a profile).
CPU_TURNS_PER_PASS = 2


def turns_per_pass(model, device, turns):
    """How many turns an evaluation pass takes: a few on the CPU fast path; all of them on a
    GPU and under --precision fp32 (the original numerics exactly)."""
    return CPU_TURNS_PER_PASS if device.type == "cpu" and on_fast_path(model) else turns


@torch.no_grad()
def evaluate(model, chunks, settings):
    """model(chunks) in evaluation mode on the device and at the precision of `settings`
    (compute.Settings), run in passes of turns_per_pass turns: the outputs equal one pass over
    all the turns (each turn is independent in evaluation mode). No turns (a process's empty
    share of a batch) give empty outputs."""
    from deepemocluster.compute import autocast

    device = settings.device
    step = max(1, turns_per_pass(model, device, len(chunks)))
    outs = []
    for i in range(0, max(1, len(chunks)), step):
        with autocast(device, settings.bf16):
            outs.append(model(chunks[i:i + step].to(device, non_blocking=True)))
    return tuple(torch.cat(part) for part in zip(*outs))


@torch.no_grad()
def predict_batch(models, chunks, settings, embeddings=False):
    """Each model's turn predictions (normalised scale) for one batch of chunked turns, on the
    device and at the precision of `settings` (compute.inference_settings); with `embeddings`,
    (predictions, 256-d turn embeddings) per model."""
    from deepemocluster.compute import autocast

    device = settings.device
    out = []
    for model in models:
        step = turns_per_pass(model, device, len(chunks))
        parts = []
        for i in range(0, len(chunks), step):
            with autocast(device, settings.bf16):
                result = model.predict_turns(chunks[i:i + step].to(device, non_blocking=True), embeddings)
            parts.append(tuple(r.float().cpu() for r in result) if embeddings else (result.float().cpu(),))
        joined = [torch.cat(p).numpy() for p in zip(*parts)]
        out.append(tuple(joined) if embeddings else joined[0])
    return out


@torch.no_grad()
def fold_batchnorm(model):
    """Fold each encoder BatchNorm (evaluation statistics) into the conv before it.

    γ·(conv(x) − μ)/√(σ² + ε) + β is one conv with rescaled weights and a shifted
    bias, so inference skips a full pass over every feature map; the result equals
    the unfolded model to float rounding. The BatchNorm slots become Identity, so
    layer indices stay those of the checkpoint. Inference only.
    """
    layers = list(model.cnn_features)
    for i, bn in enumerate(layers):
        if not isinstance(bn, nn.BatchNorm2d):
            continue
        conv = layers[i - 1]
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        conv.weight.copy_(conv.weight.double() * scale.reshape(-1, 1, 1, 1))
        conv.bias.copy_((conv.bias.double() - bn.running_mean.double()) * scale + bn.bias.double())
        layers[i] = nn.Identity()
    model.cnn_features = nn.Sequential(*layers)
    return model


def on_fast_path(model):
    """Whether the model was set up for the fast path (channels-last convolutions), not
    for the original numerics exactly (--precision fp32)."""
    return model.cnn_features[3].weight.is_contiguous(memory_format=torch.channels_last)


def evaluation_copy(model):
    """The model for an evaluation-mode pass inside training (k-means features, validation).

    On the fast path, a copy with BatchNorm folded into the convolutions: equal to
    evaluation-mode BatchNorm to float rounding, one pass less over every feature map.
    With the original numerics (--precision fp32), the model itself in evaluation mode.
    """
    if not on_fast_path(model):
        return model.eval()
    return fold_batchnorm(copy.deepcopy(model).eval()).to(memory_format=torch.channels_last)


def prepare_for_inference(model, device, fast):
    """Evaluation mode; on the fast path, BatchNorm folded into the convs and
    channels-last convolutions (both equal the original fp32 to float rounding)."""
    model = model.eval()
    if fast:
        model = fold_batchnorm(model).to(memory_format=torch.channels_last)
    return model.to(device)
