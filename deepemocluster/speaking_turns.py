"""Speaking turns cut from a recording as MSP-Podcast's were (method §2: turns of 2.75–11 s,
cut from podcasts at pauses), from the voice activity detector's speech probability of
every 32 ms frame (deepemocluster/vad.py).

The steps, each a function below: the frames are speech or pause (speech_segments); speech
is grown through the sound at its edges that the detector missed (grow_into_sound); speech
longer than a turn with no pause in it is cut at its least speech-like frames (cut_unbroken_speech);
speech across a short pause is one turn (join_across_short_pauses); a turn over the longest
is split at its longest pauses (split_at_longest_pauses); a turn under the shortest is
joined to a neighbour where the pause and the length allow (join_short_turns); each turn
then reaches a little into the pauses around it (with_margins). Every length counts that
margin, so no turn is longer than LONGEST_TURN_SECONDS. All positions are samples of the
16 kHz signal.
"""
import numpy as np

from utils import SAMPLE_RATE, SHORTEST_TRAINING_TURN_SECONDS

from deepemocluster.vad import FRAME_SAMPLES, quiet_frames

# The detector: Silero VAD's own defaults. A frame is speech from SPEECH_THRESHOLD on, and
# speech goes on until the probability falls below SILENCE_THRESHOLD (threshold − 0.15):
# the hysteresis keeps the weaker frames inside a word in it.
SPEECH_THRESHOLD = 0.5
SILENCE_THRESHOLD = 0.35
# Speech shorter than this is a click, a breath or a cough, not a word (Silero's
# min_speech_duration default, 250 ms).
SHORTEST_SPEECH_SECONDS = 0.25
# The detector now and then misses the onset or the end of a word (a fricative, a quiet first
# syllable), and a turn cut there would start or end inside the word. So each stretch of
# speech is grown outward through the frames louder than the recording's pauses, by at most
# EDGE_GROWTH_SECONDS (a few syllables). Louder than the pauses: vad.quiet_frames, over the
# whole recording.
EDGE_GROWTH_SECONDS = 1.0
# A pause shorter than this is a pause between words or phrases of one turn, which
# MSP-Podcast's turns hold; a longer one ends the turn.
JOINED_PAUSE_SECONDS = 0.5
# MSP-Podcast's turns last 2.75 to 11 s: longer speech is split, shorter speech joined
# to a neighbour where the pauses allow it.
LONGEST_TURN_SECONDS = 11.0
SHORTEST_TURN_SECONDS = SHORTEST_TRAINING_TURN_SECONDS
# A turn shorter than SHORTEST_TURN_SECONDS is joined across a pause up to this long; past
# it, the speaker has stopped, and the short turn stands alone (kept, and counted in the
# short-recording warning).
BRIDGED_PAUSE_SECONDS = 1.5
# A turn starts this much before its first speech frame and ends this much after its last
# (through frames as quiet as the pauses only, at most half of the pause beside it, within
# the recording): the detector's frames are 32 ms, and a turn cut right at its first and last
# sound would clip their onset and decay.
TURN_MARGIN_SECONDS = 0.1


def samples(seconds):
    """Seconds as a whole number of 16 kHz samples."""
    return round(seconds * SAMPLE_RATE)


def turn_spans(probabilities, levels, n_samples):
    """[start, end) 16 kHz sample spans of the speaking turns of a recording of `n_samples`
    whose frames have these speech `probabilities` and `levels` (dB); [] when it holds no speech."""
    segments = grow_into_sound(speech_segments(probabilities, n_samples), levels, n_samples)
    turns = [[segment] for segment in cut_unbroken_speech(segments, probabilities)]
    turns = join_across_short_pauses(turns)
    turns = [part for turn in turns for part in split_at_longest_pauses(turn)]
    turns = join_short_turns(turns)
    return with_margins(turns, quiet_frames(levels), n_samples)


def speech_segments(probabilities, n_samples):
    """[start, end) sample spans of the runs of speech frames (hysteresis between
    SPEECH_THRESHOLD and SILENCE_THRESHOLD), without those under SHORTEST_SPEECH_SECONDS."""
    segments, start = [], None
    for frame, p in enumerate(probabilities):
        if start is None and p >= SPEECH_THRESHOLD:
            start = frame
        elif start is not None and p < SILENCE_THRESHOLD:
            segments.append((start, frame))
            start = None
    if start is not None:
        segments.append((start, len(probabilities)))
    spans = [(a * FRAME_SAMPLES, min(b * FRAME_SAMPLES, n_samples)) for a, b in segments]
    return [(a, b) for a, b in spans if b - a >= samples(SHORTEST_SPEECH_SECONDS)]


def grow_into_sound(segments, levels, n_samples):
    """Each segment grown outward, frame by frame, until a frame as quiet as the pauses (at
    most EDGE_GROWTH_SECONDS each side); segments that then meet, as one."""
    quiet = quiet_frames(levels)
    reach = round(EDGE_GROWTH_SECONDS * SAMPLE_RATE / FRAME_SAMPLES)
    out = []
    for a, b in segments:
        first, end = a // FRAME_SAMPLES, -(-b // FRAME_SAMPLES)      # frames [first, end)
        before = next((k for k in range(reach) if first - k - 1 < 0 or quiet[first - k - 1]), reach)
        after = next((k for k in range(reach) if end + k >= len(quiet) or quiet[end + k]), reach)
        a, b = (first - before) * FRAME_SAMPLES, min((end + after) * FRAME_SAMPLES, n_samples)
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


def length(turn):
    """A turn's length in samples: its speech (a list of segments) and a margin each side."""
    return turn[-1][1] - turn[0][0] + 2 * samples(TURN_MARGIN_SECONDS)


def cut_unbroken_speech(segments, probabilities):
    """Segments too long for one turn, cut at their least speech-like frame (which goes to
    neither side; the one nearest the middle of equals), preferring cuts that leave
    SHORTEST_TURN_SECONDS on both sides, and the parts again, until every part fits."""
    probabilities = np.asarray(probabilities)
    out, todo = [], list(reversed(segments))
    while todo:
        a, b = todo.pop()
        if length([(a, b)]) <= samples(LONGEST_TURN_SECONDS):
            out.append((a, b))
            continue
        first, last = a // FRAME_SAMPLES + 1, -(-b // FRAME_SAMPLES) - 2     # frames with speech each side
        room = samples(SHORTEST_TURN_SECONDS) - 2 * samples(TURN_MARGIN_SECONDS)
        lo, hi = -(-(a + room) // FRAME_SAMPLES), (b - room) // FRAME_SAMPLES - 1
        lo, hi = (lo, hi) if lo <= hi else (first, last)
        window = probabilities[lo:hi + 1]
        ties = lo + np.flatnonzero(window == window.min())
        cut = int(ties[np.argmin(np.abs(2 * ties - first - last))])
        todo += [((cut + 1) * FRAME_SAMPLES, b), (a, cut * FRAME_SAMPLES)]
    return out


def join_across_short_pauses(turns):
    """Consecutive turns separated by less than JOINED_PAUSE_SECONDS, as one."""
    out = []
    for turn in turns:
        if out and turn[0][0] - out[-1][-1][1] < samples(JOINED_PAUSE_SECONDS):
            out[-1] = out[-1] + turn
        else:
            out.append(turn)
    return out


def split_at_longest_pauses(turn):
    """A turn longer than LONGEST_TURN_SECONDS split at its longest pause (among those that
    leave SHORTEST_TURN_SECONDS on both sides, if any; the one nearest the middle of equals),
    and the parts again, until every part fits."""
    out, todo = [], [turn]
    while todo:
        turn = todo.pop()
        if len(turn) == 1 or length(turn) <= samples(LONGEST_TURN_SECONDS):
            out.append(turn)
            continue
        cuts = range(1, len(turn))
        balanced = [k for k in cuts if min(length([turn[0], turn[k - 1]]), length([turn[k], turn[-1]]))
                    >= samples(SHORTEST_TURN_SECONDS)]
        middle = turn[0][0] + turn[-1][1]
        k = max(balanced or cuts, key=lambda k: (turn[k][0] - turn[k - 1][1],
                                                -abs(turn[k][0] + turn[k - 1][1] - middle)))
        todo += [turn[k:], turn[:k]]
    return out


def join_short_turns(turns):
    """Each turn shorter than SHORTEST_TURN_SECONDS joined to the neighbour across the shorter
    pause, if that pause is at most BRIDGED_PAUSE_SECONDS and the joined turn fits in
    LONGEST_TURN_SECONDS; again, until no short turn can be joined."""
    turns, i = list(turns), 0
    while i < len(turns):
        if length(turns[i]) >= samples(SHORTEST_TURN_SECONDS):
            i += 1
            continue
        options = []
        for j in (i - 1, i + 1):
            if 0 <= j < len(turns):
                left, right = sorted((i, j))
                joined = turns[left] + turns[right]
                pause = turns[right][0][0] - turns[left][-1][1]
                if pause <= samples(BRIDGED_PAUSE_SECONDS) and length(joined) <= samples(LONGEST_TURN_SECONDS):
                    options.append((pause, left, joined))
        if not options:
            i += 1
            continue
        _, left, joined = min(options, key=lambda o: o[0])
        turns[left:left + 2] = [joined]
        i = left
    return turns


def with_margins(turns, quiet, n_samples):
    """[start, end) of each turn: its speech and TURN_MARGIN_SECONDS each side, through
    `quiet` frames only, at most half of the pause beside it and within the recording."""
    margin, spans = samples(TURN_MARGIN_SECONDS), []
    for k, turn in enumerate(turns):
        start, end = turn[0][0], turn[-1][1]
        before = start if k == 0 else (start - turns[k - 1][-1][1]) // 2
        after = n_samples - end if k == len(turns) - 1 else (turns[k + 1][0][0] - end) // 2
        spans.append((start - quiet_reach(quiet, start, -1, min(margin, before)),
                      end + quiet_reach(quiet, end, 1, min(margin, after))))
    return spans


def quiet_reach(quiet, edge, direction, most):
    """How far (samples, at most `most`) from a turn's edge the frames stay quiet, outward."""
    reach = 0
    while reach < most:
        frame = (edge + reach) // FRAME_SAMPLES if direction > 0 else (edge - reach - 1) // FRAME_SAMPLES
        if not (0 <= frame < len(quiet) and quiet[frame]):
            break
        step = FRAME_SAMPLES - (edge + reach) % FRAME_SAMPLES if direction > 0 else \
            (edge - reach - 1) % FRAME_SAMPLES + 1
        reach = min(reach + step, most)
    return reach
