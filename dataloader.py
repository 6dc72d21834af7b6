"""The labelled dataset: turns of one split, normalised and chunked once per run.

Each turn's features are read from disk once, normalised (method §3), cut into
11 chunks (method §4) and written to an on-disk chunk cache. Training then reads
whole turns from the cache by offset, so resident memory does not grow with
the size of the corpus, and a second run with the same inputs reuses it.
"""
import hashlib
import json
import os
import queue
import re
import threading
import warnings
import weakref

import numpy as np
import torch

from deepemocluster.disk_space import require_room
from deepemocluster.features import chunk_turn, is_whole_turn_chunked, short_turn_warning
from deepemocluster.labels import feature_paths, read_labels
from utils import (CHUNKS_PER_TURN, FEATURE_VAR, FRAMES_PER_CHUNK, N_MELS, ProcessError, UserError,
                   atomic_path, human_size, load_mat, progress)

TURN_SHAPE = (CHUNKS_PER_TURN, FRAMES_PER_CHUNK, N_MELS)
CACHE_DTYPES = ("float32", "float16")
CACHE_FORMAT = "2"          # meta records every turn's frame count
CACHE_FILE = re.compile(r"^\w+_[0-9a-f]{16}\.npy$")   # <split>_<cache key>.npy
META_BYTES_PER_TURN = 64    # the cache's .json: a file name and a frame count per turn
OLDER_CACHES_SHOWN = 8


def load_features(path):
    """A feature file's (frames, 128) array; a clear error for an unreadable one."""
    try:
        feat = np.asarray(load_mat(path, FEATURE_VAR), dtype=np.float32)
    except Exception as err:
        raise UserError(f"cannot read features from {path}: {err}")
    if feat.ndim != 2 or feat.shape[1] != N_MELS:
        raise UserError(f"{path}: {FEATURE_VAR} has shape {feat.shape}, expected (frames, {N_MELS})")
    return feat


def cache_key(paths, feature_norm, dtype):
    """Identifies the inputs of a cache: the files (name, size, mtime), NormTerm (features.FeatureNorm), dtype."""
    h = hashlib.sha1()
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(np.asarray(feature_norm.mean, dtype=np.float64).tobytes())
    h.update(np.asarray(feature_norm.std, dtype=np.float64).tobytes())
    h.update(dtype.encode())
    h.update(CACHE_FORMAT.encode())
    return h.hexdigest()[:16]


def cache_bytes(n_turns, dtype):
    """The size of a chunk cache of `n_turns` turns (its .npy and .json)."""
    return 128 + n_turns * (int(np.prod(TURN_SHAPE)) * np.dtype(dtype).itemsize + META_BYTES_PER_TURN)


def check_cache_room(cache_dir, name, n_turns, dtype):
    """Before building a cache: stop at once if it cannot fit, with what to do."""
    half = (f", give --cache-dtype float16 (it needs {human_size(cache_bytes(n_turns, 'float16'))})"
            if dtype != "float16" else "")
    hint = f"Free space{half} or give another --cache-dir"
    older = older_caches(cache_dir)
    if older:
        shown = ", ".join(f"{os.path.basename(p)} ({human_size(size)})"
                          for p, size in older[:OLDER_CACHES_SHOWN])
        more = f" and {len(older) - OLDER_CACHES_SHOWN} more" if len(older) > OLDER_CACHES_SHOWN else ""
        hint += (f". Chunk caches of other inputs or NormTerm in {cache_dir}, which this run does not "
                 f"use (delete each with its .json to make room), oldest first: {shown}{more}")
    require_room(cache_dir, cache_bytes(n_turns, dtype), f"the {name} chunk cache", hint)


def older_caches(cache_dir):
    """(path, bytes with its .json) of the chunk caches in `cache_dir` that no cache open
    in this process is, oldest first."""
    in_use = {os.path.abspath(c.path) for c in ChunkCache.opened}
    try:
        names = os.listdir(cache_dir)
    except OSError:
        return []
    found = []
    for name in names:
        path = os.path.join(cache_dir, name)
        if not CACHE_FILE.match(name) or os.path.abspath(path) in in_use or not os.path.isfile(path):
            continue
        meta = path[:-len(".npy")] + ".json"
        size = os.path.getsize(path) + (os.path.getsize(meta) if os.path.isfile(meta) else 0)
        found.append((os.path.getmtime(path), path, size))
    return [(path, size) for _, path, size in sorted(found)]


class ChunkCache:
    """Normalised chunks of a list of turns: a (turns, 11, 62, 128) .npy file on disk."""

    opened = weakref.WeakSet()   # the caches this process uses: never offered for deletion

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if major == 1
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
            self.offset = f.tell()
        self.dtype = np.dtype(dtype)
        self.n_turns = shape[0]
        self.turn_bytes = int(np.prod(TURN_SHAPE)) * self.dtype.itemsize
        self._fd = os.open(path, os.O_RDONLY)
        meta_path = path[:-len(".npy")] + ".json"
        with open(meta_path) as f:
            self.meta = json.load(f)
        ChunkCache.opened.add(self)

    def __len__(self):
        return self.n_turns

    def short_turns(self):
        """Indices of the turns shorter than one chunk (their cached chunks are zero-padded)."""
        return [i for i, n in enumerate(self.meta["frames"]) if n < FRAMES_PER_CHUNK]

    def read_unpadded(self, i):
        """Turn `i` as (1, 11, T, 128) without the padding, for a turn the original chunks
        whole (53–61 frames, method §4): the padding only appended zero frames."""
        return self.read([i])[:, :, :self.meta["frames"][i]]

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def read(self, indices):
        """Turns `indices` as float32 (len, 11, 62, 128); read by offset, nothing kept."""
        out = np.empty((len(indices),) + TURN_SHAPE, dtype=np.float32)
        for row, i in enumerate(indices):
            buf = os.pread(self._fd, self.turn_bytes, self.offset + int(i) * self.turn_bytes)
            out[row] = np.frombuffer(buf, dtype=self.dtype).reshape(TURN_SHAPE)
        return out

    @classmethod
    def build(cls, path, paths, feature_norm, dtype="float32", desc="caching chunks"):
        """Read, normalise (features.FeatureNorm) and chunk every file once; stream the chunks
        into `path`."""
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                  "shape": (len(paths),) + TURN_SHAPE}
        frames = []
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.lib.format.write_array_header_1_0(f, header)
                for p in progress(paths, desc=desc, unit="turn"):
                    feat = load_features(p)
                    frames.append(int(feat.shape[0]))
                    chunks = chunk_turn(feature_norm.apply(feat))
                    f.write(chunks.astype(dtype).tobytes())
            meta = {"files": [os.path.basename(p) for p in paths], "frames": frames}
            meta_path = path[:-len(".npy")] + ".json"
            with atomic_path(meta_path) as mtmp:
                with open(mtmp, "w") as mf:
                    json.dump(meta, mf)
        return cls(path)

    @classmethod
    def open_or_build(cls, cache_dir, name, paths, feature_norm, dtype="float32", build=True):
        """The cache of these inputs, built if there is none. With `build` False (the other
        processes of a torchrun run, after rank 0 built it) a missing cache is an error."""
        key = cache_key(paths, feature_norm, dtype)
        path = os.path.join(cache_dir, f"{name}_{key}.npy")
        if os.path.isfile(path) and os.path.isfile(path[:-4] + ".json"):
            return cls(path)
        if not build:
            raise ProcessError(f"cannot see the chunk cache {path} that rank 0 built: across "
                               "machines, --cache-dir must be a folder that every machine sees")
        check_cache_room(cache_dir, name, len(paths), dtype)
        return cls.build(path, paths, feature_norm, dtype, desc=f"caching {name} chunks")


class LabelledTurns:
    """One split of a labels file for one attribute: chunk cache + normalised labels.

    `whole_short_turns` (testing): turns of 53–61 frames are chunked as the original
    does, every chunk the whole turn (see `whole_short_turns()`); training pads them.
    """

    def __init__(self, split, labels_csv, feat_dir, norm, emotion, cache_dir, cache_dtype="float32",
                 whole_short_turns=False, build_cache=True):
        self.split = split
        self.stems, labels = read_labels(labels_csv, split, (emotion,))
        self.labels = labels[emotion]
        self.label_mean = norm[f"{emotion}_mean"]
        self.label_std = norm[f"{emotion}_std"]
        self.norm_labels = ((self.labels - self.label_mean) / self.label_std).astype(np.float32)
        paths = feature_paths(feat_dir, self.stems)
        self.cache = ChunkCache.open_or_build(cache_dir, split, paths, norm["features"], cache_dtype,
                                              build_cache)
        short = self.cache.short_turns()
        frames = self.cache.meta["frames"]
        self.whole_turns = [i for i in short if whole_short_turns and is_whole_turn_chunked(frames[i])]
        padded = sorted(set(short) - set(self.whole_turns))
        if short:
            files = self.cache.meta["files"]
            warnings.warn(f"{split}: " + short_turn_warning([files[i] for i in self.whole_turns],
                                                             [files[i] for i in padded]), stacklevel=2)

    def __len__(self):
        return len(self.stems)


def batches(cache, order, batch_size, labels=None, prefetch=2, device=None, part=None):
    """Yield (index array, chunks tensor[, labels tensor]) for whole turns in `order`.

    `part` maps each batch's turns to the ones this process reads (under torchrun, its share
    of the batch, which may be empty). A background thread reads the next batches from the
    cache while the model computes on the current one; for a CUDA `device` (the run's) the
    chunks come in pinned memory, so the copy to the GPU can overlap. Any other device pins
    nothing: pinning makes a CUDA context, which a CPU run on a GPU machine must not.
    """
    pin = device is not None and device.type == "cuda"
    order = np.asarray(order)
    spans = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if part is not None:
        spans = [part(span) for span in spans]
    q = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def reader():
        try:
            for idx in spans:
                if stop.is_set():
                    return
                chunks = torch.from_numpy(cache.read(idx))
                item = (idx, chunks.pin_memory() if pin else chunks)
                if labels is not None:
                    item += (torch.from_numpy(labels[idx]),)
                q.put(item)
        except BaseException as err:  # handed to the consumer
            q.put(err)
        q.put(None)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is None:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
