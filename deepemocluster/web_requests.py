"""What the web page (web_app.py) does with a recording: its speaking turns predicted with the
models loaded at start, as a table, a plot and a CSV; an upload deleted once its request is done.

Everything here runs in the server's worker threads, several at once (--concurrency): one
Predictor serves them all.
"""
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import warnings

import numpy as np

from deepemocluster import prediction
from deepemocluster.compute import return_freed_memory
from deepemocluster.plots import figure_over_time, label_band
from utils import SAMPLE_RATE, UserError

LOG = logging.getLogger("deepemocluster.app")
TABLE_KEEP_SECONDS = 3600        # a CSV offered for download is removed after this
SHOWN_DECIMALS = 3
WARM_UP_SECONDS = 2.0            # audio predicted once at start, so that the first request is not slower
TEMP_DIR_PREFIX = "deepemocluster-app-"
UPLOAD_ROUTE = "/upload"
REQUEST_TOO_LARGE = 413
STREAMING_PLACEHOLDER_BYTES = 0x7FFFFFFF   # a data length from here up stands for "unknown"


def turn_table(predictor, audio, sample_rate=None, name="audio"):
    """The table prediction_process.py --turns vad writes for `audio` (a file, or samples at
    `sample_rate` named `name`): File_Name, Start, End and the three scores, per speaking turn."""
    return predictor.predict(audio, sample_rate=sample_rate, name=name, turns="vad")


def turn_figure(table, title, band):
    """The three scores of a turn table over time, each turn a span on the time axis; None
    for a table without turns."""
    if table is None or table.empty:
        return None
    return figure_over_time(table[["Start", "End"]].to_numpy(), table.iloc[:, -3:].to_numpy(), title, band)


def shown(table):
    """The table as the page shows it: scores and seconds to SHOWN_DECIMALS (the data, and the
    API's answer, keep every digit)."""
    return table.style.format(precision=SHOWN_DECIMALS)


class Notes(threading.local):
    """The warnings raised while this thread serves a request (shown on its page), or None
    outside a request (then logged)."""
    caught = None


NOTES = Notes()


def show_warning(message, category, filename, lineno, file=None, line=None):
    """warnings.showwarning for the server: a request's warning goes to its page, any other to
    the log, as one line."""
    if NOTES.caught is not None:
        NOTES.caught.append(str(message))
    else:
        LOG.warning("%s", message)


def route_warnings():
    """The prediction's warnings shown each time they happen (a server's requests repeat them),
    as one line; the web framework's own deprecation notes not at all."""
    warnings.filterwarnings("always", module=r"deepemocluster\.")
    warnings.filterwarnings("ignore", module=r"gradio(_client)?(\.|$)")
    warnings.showwarning = show_warning


class UploadCount(set):
    """Gradio's set of uploaded files (Blocks.upload_file_set), also counting how many uploads
    each path holds: identical files share one path in Gradio's cache, so a path is deleted
    only when the last request that uploaded it is done."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()
        self.pending = {}

    def update(self, *paths):
        with self.lock:
            for group in paths:
                for path in group:
                    self.pending[str(path)] = self.pending.get(str(path), 0) + 1
            super().update(*paths)

    def watch(self, page):
        """Stand in for the page's own set of uploads, which its upload route fills."""
        page.upload_file_set = self
        page.temp_file_sets[0] = self

    def release(self, path):
        """One request is done with `path`: delete it (and its cache folder, once empty) unless
        another upload of the same file awaits its request."""
        path = str(path)
        with self.lock:
            left = self.pending.get(path, 1) - 1
            if left > 0:
                self.pending[path] = left
                return
            self.pending.pop(path, None)
            self.discard(path)
            with_folder = os.path.dirname(path)
            try:
                os.remove(path)
                os.rmdir(with_folder)
            except OSError:
                pass


class Recordings:
    """The Predict button and the /predict endpoint: a recording's turns, with the models loaded once."""

    def __init__(self, predictor, tables_dir, uploads):
        self.predictor = predictor
        self.title = prediction.models_title(predictor.args, predictor.runner)
        self.band = label_band(predictor.runner.norm)
        self.tables_dir = tables_dir
        self.uploads = uploads
        self.lock = threading.Lock()
        self.running = 0

    def warm_up(self):
        """Predict a little noise once, so that the first request does not pay for the models'
        first run."""
        noise = np.random.default_rng(0).normal(0, 0.1, int(WARM_UP_SECONDS * SAMPLE_RATE)).astype(np.float32)
        NOTES.caught = []
        try:
            self.predictor.predict(noise, sample_rate=SAMPLE_RATE)
        finally:
            NOTES.caught = None

    def predict(self, path):
        """(table, figure, CSV path, notes) for the uploaded file at `path`, which is deleted
        before this returns. A recording that cannot be predicted is a UserError with the reason."""
        if not path:
            raise UserError("no recording: drop an audio file (WAV, FLAC, OGG, MP3) or record one first")
        name = os.path.basename(path)
        t0 = time.time()
        with self.lock:
            self.running += 1
            running = self.running
        NOTES.caught = []
        try:
            check_whole(path)
            table = turn_table(self.predictor, path)
            notes = NOTES.caught
        except UserError as err:
            reason = str(err).replace(path, name)
            LOG.warning("refused %s: %s", name, reason)
            raise UserError(reason) from None
        finally:
            NOTES.caught = None
            with self.lock:
                self.running -= 1
            self.uploads.release(path)
            return_freed_memory()
        LOG.info("predicted %s: %d turn(s) in %.1f s (%d request(s) running)",
                 name, len(table), time.time() - t0, running)
        return table, turn_figure(table, f"{name}: {self.title}", self.band), self.write_csv(table, name), notes

    def write_csv(self, table, name):
        """The table as a CSV named after the recording, for download (kept TABLE_KEEP_SECONDS)."""
        prune(self.tables_dir, TABLE_KEEP_SECONDS)
        folder = os.path.join(self.tables_dir, uuid.uuid4().hex)
        os.makedirs(folder)
        path = os.path.join(folder, os.path.splitext(name)[0] + "_turns.csv")
        table.to_csv(path, index=False)
        return path


class LogRefusedUploads:
    """ASGI middleware: an upload the server refuses (over --max-file-mb, or not a form) is
    logged as one line; the web framework answers it without a word in the log."""

    def __init__(self, app, max_file_mb):
        self.app = app
        self.max_file_mb = max_file_mb

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].endswith(UPLOAD_ROUTE):
            return await self.app(scope, receive, send)

        async def logged(message):
            if message["type"] == "http.response.start" and message["status"] >= 400:
                reason = (f"over --max-file-mb {self.max_file_mb:g} MiB" if message["status"] == REQUEST_TOO_LARGE
                          else f"HTTP {message['status']}")
                LOG.warning("refused an upload from %s: %s", (scope.get("client") or ("?",))[0], reason)
            await send(message)

        return await self.app(scope, receive, logged)


def check_whole(path):
    """A UserError for an audio file cut short, which its decoder would read without complaint:
    a WAV whose header promises more audio than the file holds, an Ogg stream without
    its last page. Placeholder lengths of files written while streaming are no promise."""
    import soundfile as sf

    try:
        info = sf.info(path).extra_info
    except Exception:  # not audio: the prediction says why
        return
    promised = re.search(r"^data\s*:\s*(\d+) \(should be (\d+)\)", info, re.MULTILINE)
    if promised and 0 < int(promised[1]) < STREAMING_PLACEHOLDER_BYTES and int(promised[1]) > int(promised[2]):
        raise UserError(f"{os.path.basename(path)} is cut short: its header promises {promised[1]} bytes of "
                        f"audio, the file holds {promised[2]}")
    if "lacks an end-of-stream bit" in info:
        raise UserError(f"{os.path.basename(path)} is cut short: its Ogg stream has no last page")


def prune(folder, age):
    """Remove the entries of `folder` older than `age` seconds."""
    cutoff = time.time() - age
    for entry in os.scandir(folder):
        if entry.stat().st_mtime < cutoff:
            shutil.rmtree(entry.path, ignore_errors=True)


def make_temp_dir():
    """A private folder for the server's uploads and tables, removed when it stops."""
    return tempfile.mkdtemp(prefix=TEMP_DIR_PREFIX)
