"""Synthetic speech for the tests: tones whose sound follows a label, a voice that drifts over
time, written as audio files."""
import os

import numpy as np
import soundfile as sf

SR = 16000


def tone_turn(rng, level, seconds):
    """A buzzy tone whose pitch and brightness follow `level` (a label in 1–7)."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 100 + 25 * level
    y = sum(np.sin(2 * np.pi * f0 * h * t) / h ** (2.5 - 0.25 * level) for h in range(1, 12))
    y = y * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2) + 0.01 * rng.standard_normal(len(t))
    return (0.3 * y / np.max(np.abs(y))).astype(np.float32)


def tone(seconds, seed=0, level=4.0):
    return tone_turn(np.random.default_rng(seed), level, seconds)


def voice(seconds, rate=SR, channels=1, seed=0):
    """A buzzy voice whose pitch, loudness and brightness drift over time (so windows differ)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    f0 = 140 + 40 * np.sin(2 * np.pi * 0.13 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    tilt = 1.5 + np.sin(2 * np.pi * 0.07 * t)
    y = sum(np.sin(h * phase) / h ** tilt for h in range(1, 10))
    y = y * (0.3 + 0.7 * np.sin(2 * np.pi * 0.4 * t) ** 2) + 0.01 * rng.standard_normal(len(t))
    y = 0.3 * y / np.max(np.abs(y))
    if channels == 2:
        y = np.stack([y, 0.6 * np.roll(y, 7)], axis=1)
    return y.astype(np.float32)


def write_audio(path, y, rate=SR, **kw):
    """y written to path (its folders made), in the format its extension names (a .wav: 16-bit
    PCM): the path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    sf.write(path, y, rate, **kw)
    return path
