"""The web page's live mode: the browser records the microphone (CAPTURE_SCRIPT) and, every
UPDATE_SECONDS, hands the samples recorded since it last did to the server, which shows the
speaking turns found so far, the last one, still open, predicted as it grows.

The browser keeps what it recorded until the server has taken it, so no audio is lost while an
update runs, and nothing is uploaded as a file. Turns that ended a while before the newest
audio are settled: their rows are kept and their audio dropped, so each update predicts only
the audio since the last settled turn and costs no more as the session grows.
"""
import base64
import binascii
import threading

import numpy as np
import pandas as pd

from deepemocluster.prediction import SECONDS_DECIMALS, csv_header
from deepemocluster.web_requests import LOG, NOTES, turn_figure, turn_table
from utils import UserError

UPDATE_SECONDS = 1.0            # how often the browser hands over its audio, and the turns are updated
SETTLED_SECONDS = 2.0           # a turn that ended this long before the newest audio no longer changes
QUIET_KEPT_SECONDS = 2.0        # audio without speech kept before the next turn
LONGEST_PIECE_SECONDS = 60.0    # a piece of live audio longer than this is refused
HIGHEST_RATE = 384000           # samples per second a browser may record at
SOURCE_NAME = "microphone"      # the File_Name of live rows
INT16_FULL_SCALE = 32768.0

# Runs once in the page: window.deepEmoLive records the microphone's first channel at the audio
# context's rate through an AudioWorklet (so, as for any microphone, the page must come from
# localhost or https), and drain() returns what it recorded since its last call as
# "RATE:FINAL:BASE64" (little-endian int16 samples; FINAL is 1 once stop() was called).
CAPTURE_SCRIPT = """
() => {
  const live = {chunks: [], rate: 0, stream: null, context: null, node: null, stopped: true};
  live.start = async () => {
    if (!live.stopped) return "";
    try {
      live.stream = await navigator.mediaDevices.getUserMedia(
        {audio: {echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
    } catch (err) {
      return "no microphone: " + err.message;
    }
    live.context = new AudioContext();
    await live.context.resume();
    live.rate = live.context.sampleRate;
    const tap = "registerProcessor('deepemo-tap', class extends AudioWorkletProcessor {" +
      " process(inputs) { if (inputs[0][0]) this.port.postMessage(inputs[0][0].slice(0)); return true; } });";
    await live.context.audioWorklet.addModule(URL.createObjectURL(new Blob([tap], {type: "text/javascript"})));
    live.node = new AudioWorkletNode(live.context, "deepemo-tap");
    live.node.port.onmessage = (e) => { if (!live.stopped) live.chunks.push(e.data); };
    live.context.createMediaStreamSource(live.stream).connect(live.node);
    live.node.connect(live.context.destination);
    live.chunks = [];
    live.stopped = false;
    return "";
  };
  live.stop = () => {
    if (live.stopped) return;
    live.stream.getTracks().forEach((track) => track.stop());
    live.context.close();
    live.stopped = true;
  };
  live.drain = () => {
    const count = live.chunks.reduce((sum, chunk) => sum + chunk.length, 0);
    const pcm = new Int16Array(count);
    let at = 0;
    for (const chunk of live.chunks)
      for (const value of chunk) pcm[at++] = Math.max(-32768, Math.min(32767, Math.round(value * 32767)));
    live.chunks = [];
    const bytes = new Uint8Array(pcm.buffer);
    let text = "";
    for (let i = 0; i < bytes.length; i += 32768)
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 32768));
    return live.rate + ":" + (live.stopped ? 1 : 0) + ":" + btoa(text);
  };
  window.deepEmoLive = live;
}
"""
START_SCRIPT = "async () => [await window.deepEmoLive.start()]"
STOP_SCRIPT = "() => { window.deepEmoLive.stop(); return []; }"
DRAIN_SCRIPT = "(piece, session) => [window.deepEmoLive.drain(), session]"


def read_piece(text):
    """(mono float32 samples, rate, final) of a piece handed over by drain(); a UserError for
    anything else."""
    try:
        rate, final, data = text.split(":", 2)
        rate = int(rate)
        pcm = np.frombuffer(base64.b64decode(data, validate=True), dtype="<i2")
    except (ValueError, binascii.Error):
        raise UserError("a piece of live audio that is not RATE:FINAL:BASE64 int16 samples") from None
    if not 0 < rate <= HIGHEST_RATE or len(pcm) > LONGEST_PIECE_SECONDS * rate:
        raise UserError(f"a piece of live audio of {len(pcm)} samples at {rate} Hz")
    return pcm.astype(np.float32) / INT16_FULL_SCALE, rate, final == "1"


class LiveSession:
    """One browser's live session: the rows of settled turns, and the audio since the last of them."""

    def __init__(self, rate):
        self.rate = rate
        self.audio = np.zeros(0, np.float32)
        self.offset = 0.0           # seconds of the session before self.audio
        self.settled = []           # rows of turns that no longer change
        self.lock = threading.Lock()

    @property
    def seconds(self):
        """Seconds of the session so far."""
        return self.offset + len(self.audio) / self.rate

    def add(self, samples):
        self.audio = np.concatenate([self.audio, samples])

    def update(self, predictor):
        """The turns so far (settled ones, then those still open) as a turn table."""
        open_rows = self.open_rows(predictor)
        ended = [row for row in open_rows if row[2] <= self.seconds - SETTLED_SECONDS]
        if ended:
            self.settled += ended
            self.drop_until(ended[-1][2])
            open_rows = open_rows[len(ended):]
        elif not open_rows:
            self.drop_until(self.seconds - QUIET_KEPT_SECONDS)
        return pd.DataFrame(self.settled + open_rows, columns=csv_header(True))

    def open_rows(self, predictor):
        """The rows of the turns in the audio since the last settled turn, on the session's clock;
        none while it holds no speech that can be predicted."""
        NOTES.caught = []            # a live update's warnings (short turns) are not news each second
        try:
            table = turn_table(predictor, self.audio, self.rate, SOURCE_NAME)
        except UserError:
            return []
        finally:
            NOTES.caught = None
        return [(SOURCE_NAME, self.at(start), self.at(end), *scores)
                for _, start, end, *scores in table.itertuples(index=False)]

    def at(self, seconds):
        """A time in the audio held as a time of the session."""
        return round(self.offset + seconds, SECONDS_DECIMALS)

    def drop_until(self, seconds):
        """Drop the audio before `seconds` of the session."""
        cut = int(round((seconds - self.offset) * self.rate))
        if cut > 0:
            self.audio = self.audio[cut:]
            self.offset += cut / self.rate


class LiveMode:
    """The page's live tab: each piece of the microphone's audio added to the browser's session,
    and the turns so far."""

    def __init__(self, recordings):
        self.recordings = recordings

    def follow(self, piece, session):
        """(session, turn table, figure, status, whether to go on) after the piece `piece`; the
        table and figure are None when there is nothing new to show."""
        try:
            samples, rate, final = read_piece(piece or "")
        except UserError as err:
            LOG.warning("live audio refused: %s", err)
            return session, None, None, "Live audio could not be read: press Start again.", False
        if session is None or session.rate != rate:
            session = LiveSession(rate)
        with session.lock:
            session.add(samples)
            table = session.update(self.recordings.predictor) if len(session.audio) else None
            seconds = session.seconds
        state = "stopped after" if final else "listening:"
        status = f"{state} {seconds:.0f} s, {0 if table is None else len(table)} turn(s)"
        if table is None:
            return session, None, None, status, not final
        figure = turn_figure(table, f"live: {self.recordings.title}", self.recordings.band)
        return session, table, figure, status, not final
