"""The demo corpus's speakers and what they feel: each speaker's voice and emotional tendency,
each turn's latent arousal, valence and dominance, the simulated raters' 1-7 ratings of it, an
MSP-Podcast style primary-emotion letter, and 16 kHz 16-bit WAV files. make_demo_corpus.py and
images/make_long_recording.py build their recordings from these."""
import wave

import numpy as np

from demo.speech import SAMPLE_RATE, draw_voice
from utils import atomic_path

INT16_FULL_SCALE = 32767
SPEAKER_STREAM = 0      # the random stream of speakers (make_demo_corpus.py keeps the turns' apart)

# --- Emotion and rating model (attribute order: arousal, valence, dominance)
RATING_MIN = 1
RATING_MAX = 7
ATTRIBUTE_CENTRE = np.array([4.1, 4.0, 4.2])
ATTRIBUTE_SPREAD = 1.15                # rating points per latent SD
ATTRIBUTE_CORRELATION = np.array([[1.00, 0.25, 0.75],
                                  [0.25, 1.00, 0.35],
                                  [0.75, 0.35, 1.00]])
SPEAKER_EMOTION_SD = 0.35              # speakers lean one way or another (same correlations)
MIN_RATERS = 5
MAX_RATERS = 7
RATER_BIAS_SD = 0.4
RATER_NOISE_SD = 0.6

ATTRIBUTE_CHOLESKY = np.linalg.cholesky(ATTRIBUTE_CORRELATION)


# ---------------------------------------------------------------------------
# Speakers, emotions, labels
# ---------------------------------------------------------------------------

def make_speaker(seed, speaker_id):
    """Draw one speaker's voice and emotional tendency from (seed, speaker_id)."""
    rng = np.random.default_rng([seed, SPEAKER_STREAM, speaker_id])
    female = speaker_id % 2 == 1       # alternate, so splits stay balanced
    return {
        "id": speaker_id,
        "gender": "Female" if female else "Male",
        **draw_voice(rng, female),
        "emotion_offset": SPEAKER_EMOTION_SD * (ATTRIBUTE_CHOLESKY @ rng.standard_normal(3)),
    }


def draw_emotion(rng, speaker):
    """Latent (arousal, valence, dominance) in SD units, correlated as in real ratings."""
    return ATTRIBUTE_CHOLESKY @ rng.standard_normal(3) + speaker["emotion_offset"]


def rate_emotion(rng, latent):
    """Mean of 5-7 simulated raters' integer 1-7 ratings around the true value."""
    true_value = ATTRIBUTE_CENTRE + ATTRIBUTE_SPREAD * latent
    n_raters = int(rng.integers(MIN_RATERS, MAX_RATERS + 1))
    bias = rng.normal(0.0, RATER_BIAS_SD, size=(n_raters, 1))
    noise = rng.normal(0.0, RATER_NOISE_SD, size=(n_raters, 3))
    ratings = np.clip(np.rint(true_value + bias + noise), RATING_MIN, RATING_MAX)
    return ratings.mean(axis=0)


def emotion_class(act, val, dom):
    """An MSP-Podcast style primary-emotion letter consistent with the attributes."""
    if val <= 3.0:
        if act >= 4.5:
            return "A" if dom >= 4.0 else "F"
        if act < 3.5:
            return "S"
        return "C" if dom >= 4.5 else "D"
    if val >= 5.0:
        return "U" if (act >= 5.5 and dom < 4.0) else "H"
    if act >= 5.5:
        return "U"
    if act < 3.0:
        return "S"
    return "N"


def write_wav(path, pcm):
    """16 kHz mono 16-bit PCM, written under a temporary name then moved into place."""
    with atomic_path(path) as tmp, wave.open(tmp, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm.tobytes())
