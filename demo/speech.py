"""The demo corpus's speech synthesiser: speech-like sound from a speaker's voice and a turn's
emotional attributes (make_demo_corpus.py draws both and writes the corpus).

A turn is a jittered glottal pulse train through a spectral-tilt filter and cascaded formant
resonators, with fricative noise and background noise. The latent attributes (arousal,
valence, dominance in SD units) drive the acoustic cues the way they do in real emotional
speech: arousal raises and widens pitch, loudness and speaking rate and flattens the tilt;
dominance lowers pitch, flattens the tilt and adds loudness; valence shifts the formants
(smiling), the pitch contour's slope, breathiness and jitter. Every draw comes from the
caller's random generator, so the same generator state gives the same samples.
"""
import math

import numpy as np
from scipy.signal import lfilter, sosfilt

SAMPLE_RATE = 16000
PEAK_LIMIT = 0.98                      # never let a turn's peak go above this

# --- Voices ---------------------------------------------------------------
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


def draw_voice(rng, female):
    """One speaker's voice: pitch, vocal-tract scale, accent range, speaking rate,
    breathiness, jitter, level and spectral tilt."""
    f0_range = FEMALE_F0_RANGE_HZ if female else MALE_F0_RANGE_HZ
    vtl_range = FEMALE_FORMANT_SCALE if female else MALE_FORMANT_SCALE
    return {
        "f0_hz": rng.uniform(*f0_range),
        "formant_scale": rng.uniform(*vtl_range),
        "pitch_range_st": rng.uniform(*PITCH_RANGE_ST),
        "syllable_rate": rng.uniform(*SYLLABLE_RATE_RANGE),
        "breathiness": rng.uniform(*BREATHINESS_RANGE),
        "jitter": rng.uniform(*JITTER_RANGE),
        "level_db": rng.normal(0.0, SPEAKER_LEVEL_DB_SD),
        "tilt_log": rng.normal(0.0, SPEAKER_TILT_SD),
    }


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


def room_tone(rng, n_samples):
    """The background noise synthesize_turn lays under a turn (its colour, at its mean level),
    for the pauses between turns."""
    noise = lfilter([1.0], [1.0, -NOISE_COLOUR_POLE], rng.standard_normal(n_samples))
    return unit_rms(noise) * 10.0 ** (NOISE_LEVEL_DBFS / 20.0)


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
