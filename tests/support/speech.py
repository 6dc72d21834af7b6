"""A synthetic recording whose speaking turns and pauses are known to the sample: the demo
synthesiser's voice in turns, room tone between them."""
import numpy as np

from demo import speakers, speech
from support.audio import SR

TURN_SECONDS = (4.0, 6.5, 14.0, 3.5, 5.0)
PAUSE_SECONDS = (1.2, 1.5, 1.0, 1.4, 0.8)
LEAD_SECONDS = 0.7
VOICE_SEED = 1


def synthetic_recording(seed=VOICE_SEED):
    """(float32 samples at 16 kHz, [start, end) of each true turn)."""
    rng = np.random.default_rng(seed)
    speaker = speakers.make_speaker(seed, 900 + seed)
    at = round(LEAD_SECONDS * SR)
    pieces, truth = [speech.room_tone(rng, at)], []
    for seconds, pause in zip(TURN_SECONDS, PAUSE_SECONDS):
        n = round(seconds * SR)
        pieces.append(speech.synthesize_turn(rng, speaker, np.array([1.0, 0.0, 0.5]), seconds)[:n])
        pieces.append(speech.room_tone(rng, round(pause * SR)))
        truth.append((at, at + n))
        at += n + round(pause * SR)
    return np.concatenate(pieces).astype(np.float32), truth
