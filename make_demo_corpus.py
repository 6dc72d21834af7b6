"""Write a synthetic emotional-speech corpus in the MSP-Podcast layout.

The corpus lets the rest of the project (feature extraction, training, test,
prediction) run end to end without the real MSP-Podcast data. Every turn is
speech-like sound made from a glottal pulse train through formant resonators,
and its emotional attributes (arousal, valence, dominance) drive acoustic cues
the way they do in real emotional speech, so the attributes can be learnt
from mel spectrograms. Labels are means of simulated raters' 1-7 ratings.

Layout written under --out (the default, --release v1.8):

    Audios/MSP-PODCAST_{speaker:04d}_{turn:04d}.wav   labelled turns
    Labels/labels_concensus.csv                        their labels (Train, Validation, Test1)
    Predict/PREDICT_{speaker:04d}_{turn:04d}.wav       unlabelled, Test1 speakers
    Unlabeled/UNLABELED_{speaker:04d}_{turn:04d}.wav   unlabelled, new speakers
    demo_corpus.json                                   marks the folder as ours

With --release v1.12 (the layout of the releases distributed today, method §2)
the labels file is Labels/labels_consensus.csv and its splits are Train,
Development, Test1, Test2 and Test3; Test3 turns have audio in Audios/ and a
row with empty EmoClass/EmoAct/EmoVal/EmoDom cells and SpkrID `Unknown`.

The same seed and flags give byte-identical files: each speaker and each turn
has its own random generator derived from (seed, stream, speaker, turn).
"""

import argparse
import csv
import json
import math
import os
import re
import sys
import time
import wave

import numpy as np
from scipy.signal import lfilter, sosfilt

# --- Audio format ---------------------------------------------------------
SAMPLE_RATE = 16000
MIN_TURN_SECONDS = 2.75
MAX_TURN_SECONDS = 7.0
INT16_FULL_SCALE = 32767
PEAK_LIMIT = 0.98                      # never let a turn's peak go above this

# --- Corpus size ----------------------------------------------------------
DEFAULT_TRAIN_TURNS = 480
DEFAULT_VALIDATION_TURNS = 120
DEFAULT_TEST_TURNS = 120
DEFAULT_TEST2_TURNS = 60               # v1.12 only; about Test2/Train of the real v1.12
DEFAULT_TEST3_TURNS = 20               # v1.12 only; one speaker's worth
DEFAULT_PREDICT_TURNS = 20
DEFAULT_UNLABELED_TURNS = 0
TURNS_PER_SPEAKER = 20                 # 480/120/120 turns -> 24/6/6 speakers

# --- Layout ---------------------------------------------------------------
SPLITS = ("Train", "Validation", "Test1")
CSV_COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom",
               "SpkrID", "Gender", "Split_Set")   # also the v1.12 column order
AUDIO_DIR = "Audios"                   # the real v1.8 named it Audio/; the demo always used Audios/
LABEL_DIR = "Labels"
LABEL_FILE = "labels_concensus.csv"    # the corpus's own spelling
# Releases (method §2): labels file name, splits in the order speakers are numbered,
# and the split that --validation counts.
DEFAULT_RELEASE = "v1.8"
RELEASES = {
    "v1.8": {"label_file": LABEL_FILE, "splits": SPLITS, "validation": "Validation"},
    "v1.12": {"label_file": "labels_consensus.csv",
              "splits": ("Train", "Development", "Test1", "Test2", "Test3"),
              "validation": "Development"},
}
UNLABELLED_SPLITS = ("Test3",)         # audio released, labels withheld
UNKNOWN_SPEAKER = "Unknown"            # SpkrID of a turn whose speaker the corpus does not give
PREDICT_DIR = "Predict"
UNLABELED_DIR = "Unlabeled"
MARKER_FILE = "demo_corpus.json"
LABELLED_NAME = "MSP-PODCAST_{speaker:04d}_{turn:04d}.wav"
PREDICT_NAME = "PREDICT_{speaker:04d}_{turn:04d}.wav"
UNLABELED_NAME = "UNLABELED_{speaker:04d}_{turn:04d}.wav"
# Files of ours that a rerun may delete when they are not part of the new corpus.
OWN_FILE_PATTERNS = {
    AUDIO_DIR: re.compile(r"MSP-PODCAST_\d{4}_\d{4}\.wav"),
    PREDICT_DIR: re.compile(r"PREDICT_\d{4}_\d{4}\.wav"),
    UNLABELED_DIR: re.compile(r"UNLABELED_\d{4}_\d{4}\.wav"),
    LABEL_DIR: re.compile("|".join(re.escape(r["label_file"]) for r in RELEASES.values())),
}

# Random streams: keep speakers, labelled, predict and unlabelled draws apart.
SPEAKER_STREAM = 0
LABELLED_STREAM = 1
PREDICT_STREAM = 2
UNLABELED_STREAM = 3

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

# --- Speakers -------------------------------------------------------------
MALE_F0_RANGE_HZ = (95.0, 140.0)
FEMALE_F0_RANGE_HZ = (175.0, 240.0)
MALE_FORMANT_SCALE = (0.94, 1.04)      # shorter vocal tract -> higher formants
FEMALE_FORMANT_SCALE = (1.10, 1.20)
PITCH_RANGE_ST = (2.0, 4.5)            # accent size, semitones
SYLLABLE_RATE_RANGE = (3.6, 5.0)       # syllables per second
BREATHINESS_RANGE = (0.05, 0.20)
JITTER_RANGE = (0.004, 0.012)          # fraction of the pitch period
SPEAKER_LEVEL_DB_SD = 1.5
SPEAKER_TILT_SD = 0.15                 # log-scale spread of the source cut-off

# --- Acoustic cues per latent SD of the attribute -------------------------
# Arousal: higher, wider pitch; louder; faster; flatter spectral tilt.
PITCH_ST_PER_AROUSAL = 2.0
PITCH_RANGE_LOG_PER_AROUSAL = 0.30
LOUDNESS_DB_PER_AROUSAL = 4.0
RATE_LOG_PER_AROUSAL = 0.12
PAUSE_LOG_PER_AROUSAL = -0.30
TILT_LOG_PER_AROUSAL = 0.35
F1_LOG_PER_AROUSAL = 0.04              # wider mouth opening
FRICATION_DB_PER_AROUSAL = 1.5
# Dominance: lower pitch, flatter tilt, a bit louder.
PITCH_ST_PER_DOMINANCE = -1.2
TILT_LOG_PER_DOMINANCE = 0.20
LOUDNESS_DB_PER_DOMINANCE = 1.5
# Valence: weaker cues.
SMILE_FORMANT_LOG_PER_VALENCE = 0.025  # smiling shortens the vocal tract
PITCH_SLOPE_ST_PER_VALENCE = 1.5       # rising (positive) vs falling contours
BREATHINESS_LOG_PER_VALENCE = -0.25
JITTER_LOG_PER_VALENCE = -0.25
PITCH_SLOPE_NOISE_ST = 1.0

# --- Synthesis details ----------------------------------------------------
SOURCE_CUTOFF_HZ = 220.0               # glottal source roll-off corner
AROUSAL_DRIFT_RANGE = (0.5, 1.5)       # arousal change across a turn, latent SD
SPEECH_LEVEL_DBFS = -27.0              # RMS of a neutral turn's speech
NOISE_LEVEL_DBFS = -58.0               # background noise RMS
NOISE_LEVEL_SD_DB = 2.0
LEAD_SILENCE_S = (0.05, 0.25)
WORD_PAUSE_S = (0.06, 0.30)
SYLLABLES_PER_WORD = (1, 3)
RESONANCE_TAIL_S = 0.03
EDGE_RAMP_S = 0.012
UNVOICED_SYLLABLE_PROB = 0.15
FRICATIVE_ONSET_PROB = 0.30
FRICATION_LEVEL = 0.35                 # relative to a vowel's RMS
SHIMMER_PER_JITTER = 5.0               # pulse amplitude wobble goes with jitter
TRAILING_MARGIN_S = 0.1                # no word starts that would end later than this before the end
SYLLABLE_LENGTH_SPREAD = (0.75, 1.25)  # syllable length relative to 1/rate
SYLLABLE_LEVEL_SD_DB = 1.5             # random stress from syllable to syllable
SYLLABLE_PITCH_SD_ST = 0.5
ACCENT_FRACTION_RANGE = (0.2, 1.0)     # accent size relative to the speaker's range
ACCENT_DECLINATION = 0.5               # each syllable ends this fraction of its accent lower
FRICATIVE_ONSET_FRACTION = (0.2, 0.35)
FRICATIVE_SECOND_PEAK = 0.6            # second resonance, relative to the centre
NOISE_COLOUR_POLE = 0.7                # background noise leans to low frequencies
# Vowel formant frequencies (Hz, adult male) and bandwidths.
VOWEL_FORMANTS_HZ = np.array([[730.0, 1090.0, 2440.0, 3400.0],   # a
                              [270.0, 2290.0, 3010.0, 3700.0],   # i
                              [300.0, 870.0, 2240.0, 3300.0],    # u
                              [530.0, 1840.0, 2480.0, 3500.0],   # e
                              [570.0, 840.0, 2410.0, 3400.0]])   # o
FORMANT_BANDWIDTHS_HZ = np.array([80.0, 100.0, 140.0, 180.0])
FRICATIVE_CENTRES_HZ = np.array([2500.0, 4200.0, 5800.0])
FRICATIVE_BANDWIDTH_HZ = 1800.0

ATTRIBUTE_CHOLESKY = np.linalg.cholesky(ATTRIBUTE_CORRELATION)


# ---------------------------------------------------------------------------
# Speakers, emotions, labels
# ---------------------------------------------------------------------------

def make_speaker(seed, speaker_id):
    """Draw one speaker's voice and emotional tendency from (seed, speaker_id)."""
    rng = np.random.default_rng([seed, SPEAKER_STREAM, speaker_id])
    female = speaker_id % 2 == 1       # alternate, so splits stay balanced
    f0_range = FEMALE_F0_RANGE_HZ if female else MALE_F0_RANGE_HZ
    vtl_range = FEMALE_FORMANT_SCALE if female else MALE_FORMANT_SCALE
    return {
        "id": speaker_id,
        "gender": "Female" if female else "Male",
        "f0_hz": rng.uniform(*f0_range),
        "formant_scale": rng.uniform(*vtl_range),
        "pitch_range_st": rng.uniform(*PITCH_RANGE_ST),
        "syllable_rate": rng.uniform(*SYLLABLE_RATE_RANGE),
        "breathiness": rng.uniform(*BREATHINESS_RANGE),
        "jitter": rng.uniform(*JITTER_RANGE),
        "level_db": rng.normal(0.0, SPEAKER_LEVEL_DB_SD),
        "tilt_log": rng.normal(0.0, SPEAKER_TILT_SD),
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


# ---------------------------------------------------------------------------
# Synthesis
# ---------------------------------------------------------------------------

def resonator_sos(freqs_hz, bandwidths_hz):
    """Cascade of unity-DC-gain two-pole resonators as second-order sections."""
    freqs = np.minimum(np.asarray(freqs_hz, float), 0.47 * SAMPLE_RATE)
    radius = np.exp(-np.pi * np.asarray(bandwidths_hz, float) / SAMPLE_RATE)
    a1 = -2.0 * radius * np.cos(2.0 * np.pi * freqs / SAMPLE_RATE)
    a2 = radius ** 2
    sos = np.zeros((len(freqs), 6))
    sos[:, 0] = 1.0 + a1 + a2
    sos[:, 3] = 1.0
    sos[:, 4] = a1
    sos[:, 5] = a2
    return sos


def edge_envelope(length):
    """Raised-cosine fade in and out so segments start and stop without clicks."""
    env = np.ones(length)
    ramp = min(int(EDGE_RAMP_S * SAMPLE_RATE), length // 2)
    if ramp > 0:
        fade = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
        env[:ramp] = fade
        env[length - ramp:] = fade[::-1]
    return env


def unit_rms(x):
    """x scaled to RMS 1 (unchanged if silent), so levels are set explicitly."""
    rms = math.sqrt(float(np.mean(x * x))) if len(x) else 0.0
    return x / rms if rms > 0 else x


def voiced_segment(rng, length, f0_start, accent_st, contour_st, tilt_hz,
                   formants_hz, breathiness, jitter):
    """A vowel: jittered pulse train with a pitch accent, tilt filter, aspiration, formants."""
    x = (np.arange(length) + 0.5) / length
    semitones = accent_st * np.sin(np.pi * x) + contour_st * (x - 0.5)
    f0 = f0_start * np.exp2(semitones / 12.0)
    phase = rng.uniform() + np.cumsum(f0) / SAMPLE_RATE
    pulses = np.flatnonzero(np.diff(np.floor(phase))) + 1
    source = np.zeros(length + int(RESONANCE_TAIL_S * SAMPLE_RATE))
    if len(pulses):
        period = SAMPLE_RATE / f0[pulses]
        shifted = pulses + np.rint(rng.normal(0.0, jitter, len(pulses)) * period)
        shifted = np.clip(shifted.astype(int), 0, length - 1)
        shimmer = 1.0 + SHIMMER_PER_JITTER * jitter * rng.standard_normal(len(pulses))
        np.add.at(source, shifted, shimmer)
    # Glottal roll-off (two real poles) and lip radiation (first difference).
    pole = math.exp(-2.0 * math.pi * tilt_hz / SAMPLE_RATE)
    glottal = lfilter([(1.0 - pole) ** 2], [1.0, -2.0 * pole, pole * pole], source)
    glottal = np.diff(glottal, prepend=0.0)
    glottal = unit_rms(glottal)
    aspiration = rng.standard_normal(len(source))
    aspiration = np.diff(aspiration, prepend=0.0)
    aspiration[length:] = 0.0
    excitation = glottal + breathiness * unit_rms(aspiration)
    excitation[:length] *= edge_envelope(length)
    excitation[length:] = 0.0
    out = sosfilt(resonator_sos(formants_hz, FORMANT_BANDWIDTHS_HZ), excitation)
    return unit_rms(out)


def unvoiced_segment(rng, length, centre_hz):
    """A fricative: white noise through a broad resonance."""
    noise = rng.standard_normal(length)
    sos = resonator_sos([centre_hz, FRICATIVE_SECOND_PEAK * centre_hz],
                        [FRICATIVE_BANDWIDTH_HZ, FRICATIVE_BANDWIDTH_HZ])
    return unit_rms(sosfilt(sos, noise) * edge_envelope(length))


def synthesize_turn(rng, speaker, latent, duration_s):
    """Speech-like audio (float, peak <= PEAK_LIMIT) for one turn with the given emotion."""
    arousal, valence, dominance = latent
    n_samples = int(round(duration_s * SAMPLE_RATE))
    speech = np.zeros(n_samples + int(0.5 * SAMPLE_RATE))  # room for the last tail

    # Arousal drifts up or down across the turn; its time mean is the turn's value.
    drift = rng.uniform(*AROUSAL_DRIFT_RANGE) * rng.choice([-1.0, 1.0])
    pitch_slope_st = PITCH_SLOPE_ST_PER_VALENCE * valence + rng.normal(0.0, PITCH_SLOPE_NOISE_ST)
    formant_scale = speaker["formant_scale"] * math.exp(SMILE_FORMANT_LOG_PER_VALENCE * valence)
    breathiness = speaker["breathiness"] * math.exp(BREATHINESS_LOG_PER_VALENCE * valence)
    jitter = speaker["jitter"] * math.exp(JITTER_LOG_PER_VALENCE * valence)
    tilt_base = speaker["tilt_log"] + TILT_LOG_PER_DOMINANCE * dominance
    pitch_base_st = PITCH_ST_PER_DOMINANCE * dominance

    t = rng.uniform(*LEAD_SILENCE_S)
    end_s = duration_s - TRAILING_MARGIN_S
    while True:
        n_syll = int(rng.integers(SYLLABLES_PER_WORD[0], SYLLABLES_PER_WORD[1] + 1))
        local_a = arousal + drift * (t / duration_s - 0.5)
        rate = speaker["syllable_rate"] * math.exp(RATE_LOG_PER_AROUSAL * local_a)
        syll_durs = rng.uniform(*SYLLABLE_LENGTH_SPREAD, n_syll) / rate
        if t + syll_durs.sum() > end_s:
            break
        for syll_s in syll_durs:
            position = t / duration_s - 0.5
            local_a = arousal + drift * position
            gain = 10.0 ** ((LOUDNESS_DB_PER_AROUSAL * (local_a - arousal)
                             + rng.normal(0.0, SYLLABLE_LEVEL_SD_DB)) / 20.0)
            start = int(t * SAMPLE_RATE)
            length = int(syll_s * SAMPLE_RATE)
            if rng.uniform() < UNVOICED_SYLLABLE_PROB:
                centre = rng.choice(FRICATIVE_CENTRES_HZ) * speaker["formant_scale"]
                seg = unvoiced_segment(rng, length, centre)
                level = FRICATION_LEVEL * 10.0 ** (FRICATION_DB_PER_AROUSAL * local_a / 20.0)
                speech[start:start + length] += gain * level * seg
            else:
                if rng.uniform() < FRICATIVE_ONSET_PROB:
                    onset = int(length * rng.uniform(*FRICATIVE_ONSET_FRACTION))
                    centre = rng.choice(FRICATIVE_CENTRES_HZ) * speaker["formant_scale"]
                    level = FRICATION_LEVEL * 10.0 ** (FRICATION_DB_PER_AROUSAL * local_a / 20.0)
                    speech[start:start + onset] += gain * level * unvoiced_segment(rng, onset, centre)
                    start += onset
                    length -= onset
                vowel = VOWEL_FORMANTS_HZ[rng.integers(len(VOWEL_FORMANTS_HZ))]
                formants = vowel * formant_scale
                formants[0] *= math.exp(F1_LOG_PER_AROUSAL * local_a)
                pitch_st = (pitch_base_st + PITCH_ST_PER_AROUSAL * local_a
                            + pitch_slope_st * position + rng.normal(0.0, SYLLABLE_PITCH_SD_ST))
                f0 = speaker["f0_hz"] * 2.0 ** (pitch_st / 12.0)
                accent = (speaker["pitch_range_st"] * math.exp(PITCH_RANGE_LOG_PER_AROUSAL * local_a)
                          * rng.uniform(*ACCENT_FRACTION_RANGE))
                tilt_hz = SOURCE_CUTOFF_HZ * math.exp(tilt_base + TILT_LOG_PER_AROUSAL * local_a)
                seg = voiced_segment(rng, length, f0, accent, -ACCENT_DECLINATION * accent, tilt_hz,
                                     formants, breathiness, jitter)
                speech[start:start + len(seg)] += gain * seg
            t += syll_s
        local_a = arousal + drift * (t / duration_s - 0.5)
        t += rng.uniform(*WORD_PAUSE_S) * math.exp(PAUSE_LOG_PER_AROUSAL * local_a)
    speech = speech[:n_samples]

    # Turn level follows the loudness cue; background noise sits at a fixed level.
    level_db = (SPEECH_LEVEL_DBFS + speaker["level_db"] + LOUDNESS_DB_PER_AROUSAL * arousal
                + LOUDNESS_DB_PER_DOMINANCE * dominance)
    speech = unit_rms(speech) * 10.0 ** (level_db / 20.0)
    noise = lfilter([1.0], [1.0, -NOISE_COLOUR_POLE], rng.standard_normal(n_samples))
    noise_db = NOISE_LEVEL_DBFS + rng.normal(0.0, NOISE_LEVEL_SD_DB)
    audio = speech + unit_rms(noise) * 10.0 ** (noise_db / 20.0)
    peak = float(np.max(np.abs(audio)))
    if peak > PEAK_LIMIT:
        audio *= PEAK_LIMIT / peak
    return audio


def make_turn(seed, stream, speaker, turn):
    """Audio (int16) and labels of one turn, a pure function of (seed, stream, speaker, turn)."""
    rng = np.random.default_rng([seed, stream, speaker["id"], turn])
    latent = draw_emotion(rng, speaker)
    labels = rate_emotion(rng, latent)
    duration_s = rng.uniform(MIN_TURN_SECONDS, MAX_TURN_SECONDS)
    audio = synthesize_turn(rng, speaker, latent, duration_s)
    pcm = np.rint(audio * INT16_FULL_SCALE).astype("<i2")
    return pcm, labels


# ---------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------

def temporary_name(path):
    return f"{path}.{os.getpid()}.tmp"


def write_wav(path, pcm):
    """16 kHz mono 16-bit PCM, written under a temporary name then moved into place."""
    tmp = temporary_name(path)
    with wave.open(tmp, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(pcm.tobytes())
    os.replace(tmp, path)


def write_text(path, text):
    tmp = temporary_name(path)
    with open(tmp, "w", encoding="utf-8", newline="") as handle:
        handle.write(text)
    os.replace(tmp, path)


def format_rating(value):
    return f"{value:.4f}"


def labels_csv_text(rows):
    lines = [",".join(CSV_COLUMNS)]
    for row in rows:
        lines.append(",".join(str(row[column]) for column in CSV_COLUMNS))
    return "\n".join(lines) + "\n"


def check_output_dir(out_dir):
    """Refuse to write into a folder that holds a corpus this script did not make."""
    if os.path.exists(os.path.join(out_dir, MARKER_FILE)):
        return None
    for release in RELEASES.values():
        if os.path.exists(os.path.join(out_dir, LABEL_DIR, release["label_file"])):
            return (f"{out_dir} already holds {LABEL_DIR}/{release['label_file']} but no "
                    f"{MARKER_FILE}: it does not look like a demo corpus written by this script; "
                    "choose another --out")
    return None


def prune_stale_files(out_dir, keep):
    """Delete our own generated files (by name pattern) that the new corpus does not have:
    WAVs of a bigger earlier run, the labels file of another --release."""
    removed = 0
    for sub, pattern in OWN_FILE_PATTERNS.items():
        folder = os.path.join(out_dir, sub)
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if pattern.fullmatch(name) and path not in keep:
                os.remove(path)
                removed += 1
    return removed


# ---------------------------------------------------------------------------
# Corpus plan
# ---------------------------------------------------------------------------

def speaker_count(n_turns):
    """Speakers for a split of n_turns: about TURNS_PER_SPEAKER each, at least one."""
    if n_turns <= 0:
        return 0
    return max(1, math.ceil(n_turns / TURNS_PER_SPEAKER))


def spread(n_items, n_groups):
    """Split n_items as evenly as possible into n_groups sizes."""
    base, extra = divmod(n_items, n_groups)
    return [base + (1 if i < extra else 0) for i in range(n_groups)]


def plan_corpus(counts, n_predict, n_unlabeled):
    """List of (stream, speaker_id, turn, kind, split) for every file to write.

    Speakers of the splits in `counts` are numbered 1.. in its order (Train,
    Validation, Test1; or Train, Development, Test1, Test2, Test3), so splits
    never share a speaker and the first three splits are the same in both
    releases; unlabelled-pool speakers come after them. Predict turns cycle
    over the Test1 speakers with their own numbering.
    """
    plan = []
    next_speaker = 1
    test_speakers = []
    for split in counts:
        n_turns = counts[split]
        n_spk = speaker_count(n_turns)
        for speaker_id, n in zip(range(next_speaker, next_speaker + n_spk), spread(n_turns, max(n_spk, 1))):
            for turn in range(1, n + 1):
                plan.append((LABELLED_STREAM, speaker_id, turn, "labelled", split))
            if split == "Test1":
                test_speakers.append(speaker_id)
        next_speaker += n_spk
    for k in range(n_predict):
        speaker_id = test_speakers[k % len(test_speakers)]
        plan.append((PREDICT_STREAM, speaker_id, k // len(test_speakers) + 1, "predict", None))
    n_spk = speaker_count(n_unlabeled)
    for speaker_id, n in zip(range(next_speaker, next_speaker + n_spk), spread(n_unlabeled, max(n_spk, 1))):
        for turn in range(1, n + 1):
            plan.append((UNLABELED_STREAM, speaker_id, turn, "unlabeled", None))
    return plan


def file_path(out_dir, kind, speaker_id, turn):
    if kind == "labelled":
        return os.path.join(out_dir, AUDIO_DIR, LABELLED_NAME.format(speaker=speaker_id, turn=turn))
    if kind == "predict":
        return os.path.join(out_dir, PREDICT_DIR, PREDICT_NAME.format(speaker=speaker_id, turn=turn))
    return os.path.join(out_dir, UNLABELED_DIR, UNLABELED_NAME.format(speaker=speaker_id, turn=turn))


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        description="Write a synthetic emotional-speech corpus in the MSP-Podcast layout "
                    "(Audios/, Labels/labels_concensus.csv, Predict/, Unlabeled/; with "
                    "--release v1.12 Labels/labels_consensus.csv with Train, Development, "
                    "Test1, Test2 and an unlabelled Test3).")
    parser.add_argument("--out", default="./demo_corpus",
                        help="corpus folder to write (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=0,
                        help="random seed; the same seed and flags give identical files (default: 0)")
    parser.add_argument("--release", choices=list(RELEASES), default=DEFAULT_RELEASE,
                        help="corpus layout: v1.8 (labels_concensus.csv; Train, Validation, Test1) "
                             "or v1.12 (labels_consensus.csv; Train, Development, Test1, Test2, "
                             "and Test3 with audio but no labels) (default: %(default)s)")
    parser.add_argument("--size", type=positive_float, default=1.0,
                        help="scale on the default Train/Validation/Test1 counts "
                             f"({DEFAULT_TRAIN_TURNS}/{DEFAULT_VALIDATION_TURNS}/{DEFAULT_TEST_TURNS}; "
                             f"with v1.12 Train/Development/Test1/Test2/Test3: {DEFAULT_TRAIN_TURNS}/"
                             f"{DEFAULT_VALIDATION_TURNS}/{DEFAULT_TEST_TURNS}/{DEFAULT_TEST2_TURNS}/"
                             f"{DEFAULT_TEST3_TURNS}); each split keeps at least one turn (default: 1.0)")
    parser.add_argument("--train", type=non_negative_int, default=None,
                        help="number of Train turns (overrides --size)")
    parser.add_argument("--validation", type=non_negative_int, default=None,
                        help="number of Validation turns, Development with --release v1.12 "
                             "(overrides --size)")
    parser.add_argument("--test", type=non_negative_int, default=None,
                        help="number of Test1 turns (overrides --size)")
    parser.add_argument("--test2", type=non_negative_int, default=None,
                        help=f"number of Test2 turns, --release v1.12 only (overrides --size; "
                             f"default {DEFAULT_TEST2_TURNS})")
    parser.add_argument("--test3", type=non_negative_int, default=None,
                        help=f"number of unlabelled Test3 turns, --release v1.12 only (overrides "
                             f"--size; default {DEFAULT_TEST3_TURNS})")
    parser.add_argument("--predict", type=non_negative_int, default=DEFAULT_PREDICT_TURNS,
                        help="unlabelled turns from Test1 speakers written to Predict/ (default: %(default)s)")
    parser.add_argument("--unlabeled", type=non_negative_int, default=DEFAULT_UNLABELED_TURNS,
                        help="unlabelled turns from new speakers written to Unlabeled/ (default: %(default)s)")
    return parser


def split_counts(args):
    """Turn counts per split of the release, in its order: explicit flags win, otherwise
    the defaults scaled by --size."""
    validation = RELEASES[args.release]["validation"]
    defaults = {"Train": DEFAULT_TRAIN_TURNS, validation: DEFAULT_VALIDATION_TURNS,
                "Test1": DEFAULT_TEST_TURNS, "Test2": DEFAULT_TEST2_TURNS,
                "Test3": DEFAULT_TEST3_TURNS}
    given = {"Train": args.train, validation: args.validation, "Test1": args.test,
             "Test2": args.test2, "Test3": args.test3}
    return {split: given[split] if given[split] is not None
            else max(1, int(round(defaults[split] * args.size)))
            for split in RELEASES[args.release]["splits"]}


def label_row(file_name, split, speaker, labels):
    """One row of the labels file; a Test3 row has empty label cells and SpkrID Unknown,
    as the corpus withholds them."""
    if split in UNLABELLED_SPLITS:
        return {"FileName": file_name, "EmoClass": "", "EmoAct": "", "EmoVal": "", "EmoDom": "",
                "SpkrID": UNKNOWN_SPEAKER, "Gender": speaker["gender"], "Split_Set": split}
    act, val, dom = labels
    return {
        "FileName": file_name,
        "EmoClass": emotion_class(act, val, dom),
        "EmoAct": format_rating(act),
        "EmoVal": format_rating(val),
        "EmoDom": format_rating(dom),
        "SpkrID": speaker["id"],
        "Gender": speaker["gender"],
        "Split_Set": split,
    }


def main(argv=None):
    """Write the corpus described by the command line; return 0 on success."""
    parser = build_parser()
    args = parser.parse_args(argv)
    splits = RELEASES[args.release]["splits"]
    for flag, split in (("--test2", "Test2"), ("--test3", "Test3")):
        if getattr(args, flag[2:]) is not None and split not in splits:
            parser.error(f"{flag} needs --release v1.12: the {args.release} layout has no {split}")
    counts = split_counts(args)
    if args.predict > 0 and counts["Test1"] == 0:
        parser.error("--predict draws from Test1 speakers, so it needs --test of at least 1")
    problem = check_output_dir(args.out)
    if problem:
        parser.error(problem)

    started = time.perf_counter()
    out_dir = args.out
    for sub in (AUDIO_DIR, LABEL_DIR, PREDICT_DIR, UNLABELED_DIR):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)

    plan = plan_corpus(counts, args.predict, args.unlabeled)
    speakers = {}
    rows = []
    written = set()
    for stream, speaker_id, turn, kind, split in plan:
        if speaker_id not in speakers:
            speakers[speaker_id] = make_speaker(args.seed, speaker_id)
        speaker = speakers[speaker_id]
        pcm, labels = make_turn(args.seed, stream, speaker, turn)
        path = file_path(out_dir, kind, speaker_id, turn)
        write_wav(path, pcm)
        written.add(path)
        if kind == "labelled":
            rows.append(label_row(os.path.basename(path), split, speaker, labels))

    label_path = os.path.join(out_dir, LABEL_DIR, RELEASES[args.release]["label_file"])
    write_text(label_path, labels_csv_text(rows))
    written.add(label_path)
    marker = {"generator": "make_demo_corpus.py", "seed": args.seed, "counts": counts,
              "predict": args.predict, "unlabeled": args.unlabeled, "sample_rate": SAMPLE_RATE}
    if args.release != DEFAULT_RELEASE:   # the default's marker stays as it always was
        marker["release"] = args.release
    write_text(os.path.join(out_dir, MARKER_FILE), json.dumps(marker, indent=2, sort_keys=True) + "\n")
    removed = prune_stale_files(out_dir, written)
    elapsed = time.perf_counter() - started

    n_speakers = {split: len({spk for _, spk, _, kind, s in plan if kind == "labelled" and s == split})
                  for split in counts}
    print(f"Demo corpus written to {os.path.abspath(out_dir)} (seed {args.seed}, "
          f"release {args.release} layout)")
    for split in counts:
        note = "  (no labels, SpkrID Unknown)" if split in UNLABELLED_SPLITS else ""
        print(f"  {split:<11} {counts[split]:5d} turns, {n_speakers[split]:3d} speakers{note}")
    print(f"  {'Predict':<11} {args.predict:5d} turns  -> {os.path.join(out_dir, PREDICT_DIR)}")
    print(f"  {'Unlabeled':<11} {args.unlabeled:5d} turns  -> {os.path.join(out_dir, UNLABELED_DIR)}")
    print(f"  audio  -> {os.path.join(out_dir, AUDIO_DIR)}")
    print(f"  labels -> {label_path}")
    if removed:
        print(f"  removed {removed} stale generated file(s) from an earlier run")
    print(f"  took {elapsed:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
