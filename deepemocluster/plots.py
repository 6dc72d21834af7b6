"""--plot and the web page: arousal, dominance and valence of one recording over time."""
import numpy as np

from utils import EMOTIONS, atomic_path

ATTRIBUTE_NAMES = {"Act": "arousal", "Dom": "dominance", "Val": "valence"}
BAND_STDS = 2.0             # the y axis spans at least the Train labels' mean ± 2 std
FIGURE_INCHES = (9.0, 3.6)
DPI = 110


def label_band(norm):
    """(low, high) of the Train labels' mean ± BAND_STDS std over the three attributes, from the
    NormTerm: where most labels lie on the corpus's own scale (1–7 in MSP-Podcast, any other)."""
    low = min(norm[f"{e}_mean"] - BAND_STDS * norm[f"{e}_std"] for e in EMOTIONS)
    high = max(norm[f"{e}_mean"] + BAND_STDS * norm[f"{e}_std"] for e in EMOTIONS)
    return low, high


def plot_over_time(path, spans, scores, title, band):
    """Write a PNG of the three attributes over time (figure_over_time)."""
    fig = figure_over_time(spans, scores, title, band)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)


def figure_over_time(spans, scores, title, band):
    """A matplotlib Figure of the three attributes over time.

    `spans` (windows × 2) are the windows' start and end in seconds, `scores`
    (windows × 3) their Act, Dom, Val scores. Each window is drawn as a bar over its
    span, and a line joins the window centres (windows may overlap). The y axis covers
    the scores and `band` (label_band), so plots of one corpus share a scale.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    spans, scores = np.asarray(spans, float), np.asarray(scores, float)
    fig = Figure(figsize=FIGURE_INCHES)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    centres = spans.mean(axis=1)
    for col, emo in enumerate(EMOTIONS):
        line, = ax.plot(centres, scores[:, col], marker="o", markersize=3, linewidth=1.2,
                        label=ATTRIBUTE_NAMES[emo])
        ax.hlines(scores[:, col], spans[:, 0], spans[:, 1], colors=line.get_color(), alpha=0.35,
                  linewidth=3)
    low, high = min(band[0], scores.min()), max(band[1], scores.max())
    margin = 0.04 * (high - low) or 0.1
    ax.set_ylim(low - margin, high + margin)
    ax.set_xlim(0, max(spans[:, 1].max(), 1e-3))
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score (the labels' rating scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8, ncol=3)
    fig.tight_layout()
    return fig
