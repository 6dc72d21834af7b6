"""Draw the Temporal-Enhanced DeepEmoCluster framework diagram.

Writes ``images/framework.png`` (1600 x 700 px, white background) next to
this script.  The drawing is deterministic: the synthetic spectrogram comes
from a fixed-seed generator and no timestamp or software tag is stored in
the PNG.  Run with ``python images/draw_framework.py``.
"""

import os

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle  # noqa: E402

# Canvas: one axes covering the figure, 1 data unit = 10 px.
W, H = 160.0, 70.0
DPI = 150

# Method constants (method §4–5).
N_MELS = 128
C = 11
M = 62
T_DEMO = 300                       # frames of the synthetic turn (~4.8 s)
STEP = (T_DEMO - M) // (C - 1)     # = 23

# Colours: one hue per stage, used for box edge (dark) and fill (light).
COL = {
    "input": ("#2F5D8A", "#E8F0F8"),
    "enc": ("#2E7D4F", "#E6F4EA"),
    "temp": ("#5E4B9C", "#EFEBF8"),
    "reg": ("#B03A3A", "#FBEAEA"),
    "clu": ("#C0661A", "#FDF0E3"),
    "loop": ("#C0661A", "#FFF8F0"),
}
ARROW = "#333333"
TXT = "#1A1A1A"
FS = 6.4          # body font size (pt)
FS_HEAD = 7.4     # panel header size


def synthetic_spectrogram(n_frames=T_DEMO, n_mels=N_MELS, seed=7):
    """A deterministic, speech-like (mels, frames) array in [0, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_frames)[None, :]
    f = np.arange(n_mels)[:, None]
    # Syllable-like energy envelope with a few pauses.
    env = 0.55 + 0.45 * np.sin(2 * np.pi * t / 38.0) ** 2
    env *= 1.0 - 0.85 * np.exp(-((t - 128) / 7.0) ** 2)
    env *= 1.0 - 0.85 * np.exp(-((t - 226) / 6.0) ** 2)
    # Harmonic stack following a slowly varying pitch contour.
    f0 = 9.0 + 3.0 * np.sin(2 * np.pi * t / 170.0) + 1.0 * np.sin(2 * np.pi * t / 41.0)
    harm = np.zeros((n_mels, n_frames))
    for h in range(1, 9):
        centre = 4.0 + h * f0 * (1.0 - 0.045 * h)
        harm += (0.9 ** h) * np.exp(-((f - centre) / 1.6) ** 2)
    # Formant-like broad bands and a spectral tilt.
    form = 0.35 * np.exp(-((f - (60 + 10 * np.sin(2 * np.pi * t / 90.0))) / 9.0) ** 2)
    form += 0.25 * np.exp(-((f - (88 + 6 * np.cos(2 * np.pi * t / 70.0))) / 8.0) ** 2)
    tilt = np.exp(-f / 70.0)
    noise = 0.12 * rng.random((n_mels, n_frames))
    spec = env * (harm + form) * tilt + noise * (0.4 + 0.6 * tilt)
    spec = np.log1p(12.0 * spec)
    spec -= spec.min()
    return spec / spec.max()


def box(ax, x, y, w, h, stage, lw=1.1, fill=True, ls="-", rounding=1.2, z=1):
    edge, face = COL[stage]
    patch = FancyBboxPatch(
        (x, y), w, h,
        boxstyle=f"round,pad=0,rounding_size={rounding}",
        fc=face if fill else "white", ec=edge, lw=lw, ls=ls, zorder=z,
    )
    ax.add_patch(patch)
    return patch


def text(ax, x, y, s, size=FS, weight="normal", color=TXT, ha="center",
         va="center", z=5, **kw):
    return ax.text(x, y, s, fontsize=size, fontweight=weight, color=color,
                   ha=ha, va=va, zorder=z, **kw)


def arrow(ax, p0, p1, color=ARROW, lw=1.4, rad=0.0, style="-|>", ms=9,
          ls="-", z=4, shrink=0.0):
    a = FancyArrowPatch(
        p0, p1, arrowstyle=style, mutation_scale=ms, color=color, lw=lw,
        connectionstyle=f"arc3,rad={rad}", linestyle=ls, zorder=z,
        shrinkA=shrink, shrinkB=shrink,
    )
    ax.add_patch(a)
    return a


def draw_input(ax):
    """Panel 1: mel spectrogram and the 11 overlapping chunk windows."""
    edge, _ = COL["input"]
    x0, x1 = 3.0, 31.0
    box(ax, x0, 19.5, x1 - x0, 43.0, "input")
    text(ax, (x0 + x1) / 2, 60.0, "Speech turn", size=FS_HEAD, weight="bold",
         color=edge)
    text(ax, (x0 + x1) / 2, 57.4, f"128-band mel spectrogram (T × {N_MELS})")

    sx0, sx1, sy0, sy1 = 5.5, 29.5, 40.0, 55.0
    spec = synthetic_spectrogram()
    ax.imshow(spec, cmap="magma", origin="lower", aspect="auto",
              extent=(sx0, sx1, sy0, sy1), interpolation="bilinear", zorder=2)
    ax.add_patch(Rectangle((sx0, sy0), sx1 - sx0, sy1 - sy0, fill=False,
                           ec="#444444", lw=0.6, zorder=3))
    text(ax, sx0 - 0.9, (sy0 + sy1) / 2, "mel band", size=5.2, rotation=90,
         color="#555555")

    def fx(frame):
        return sx0 + (sx1 - sx0) * frame / T_DEMO

    # Chunk windows: staggered bars under the spectrogram.
    cmap = plt.get_cmap("viridis")
    bar_h, pitch = 0.58, 0.85
    top = sy0 - 1.0
    for i in range(C):
        s = i * STEP
        y = top - (i + 1) * pitch
        colour = cmap(0.08 + 0.84 * i / (C - 1))
        ax.add_patch(Rectangle((fx(s), y), fx(s + M) - fx(s), bar_h,
                               fc=colour, ec="none", zorder=3))
        # Mark the window of the first and last chunk on the spectrogram.
        if i in (0, C - 1):
            ax.add_patch(Rectangle((fx(s), sy0), fx(s + M) - fx(s), sy1 - sy0,
                                   fill=False, ec="white", lw=0.9, ls="--",
                                   zorder=3))
    # Chunk indices as in the step formula (i = 0 ... 10).
    text(ax, fx(0) - 0.4, top - pitch + bar_h / 2, "0", size=4.8, ha="right",
         color="#555555")
    text(ax, fx((C - 1) * STEP + M) + 0.4, top - C * pitch + bar_h / 2, "10",
         size=4.8, ha="left", color="#555555")
    text(ax, sx1, top - C * pitch - 1.3, "time (frames) →", size=5.2,
         ha="right", color="#555555")

    text(ax, (x0 + x1) / 2, 26.0,
         f"C = {C} chunks × {M} frames (≈1 s)", size=6.2)
    text(ax, (x0 + x1) / 2, 23.5,
         r"step = $\lfloor (T-62)\,/\,10 \rfloor$", size=6.2)
    text(ax, (x0 + x1) / 2, 21.2,
         r"chunk $i$ = $[\,i\cdot$step$,\ i\cdot$step$+62)$,  $i$ = 0…10",
         size=5.6, color="#333333")


def draw_encoder(ax):
    """Panel 2: the shared 7-block CNN and cnn_out."""
    edge, face = COL["enc"]
    x0, x1 = 36.0, 65.0
    # "Stack of cards" hint that the same encoder runs on all 11 chunks.
    for k in (2, 1):
        box(ax, x0 + 0.7 * k, 19.5 + 0.7 * k, x1 - x0, 43.0, "enc", lw=0.7,
            z=0.5 + 0.1 * (2 - k))
    box(ax, x0, 19.5, x1 - x0, 43.0, "enc", z=1)
    cx = (x0 + x1) / 2
    text(ax, cx, 60.0, "Shared CNN chunk encoder", size=FS_HEAD,
         weight="bold", color=edge)
    text(ax, cx, 57.4, "same weights for each of the 11 chunks")

    text(ax, cx, 54.0, "7 × [Conv 3×3 → BN → ReLU]", weight="bold", size=6.2)
    # Blocks drawn with height ~ spatial size and width ~ channels.
    channels = [32, 32, 64, 64, 128, 128, 128]
    strides = [1, 1, 2, 2, 2, 2, 2]
    heights = [12.0, 12.0, 9.5, 7.5, 6.0, 5.0, 4.2]
    widths = [1.3, 1.3, 1.9, 1.9, 2.6, 2.6, 2.6]
    gap = 1.05
    total = sum(widths) + gap * (len(widths) - 1)
    x = cx - total / 2
    ymid = 44.0
    for ch, s, h, w in zip(channels, strides, heights, widths):
        ax.add_patch(FancyBboxPatch((x, ymid - h / 2), w, h,
                                    boxstyle="round,pad=0,rounding_size=0.35",
                                    fc="#8CC9A2", ec=edge, lw=0.8, zorder=3))
        text(ax, x + w / 2, ymid - 7.3, str(ch), size=5.4)
        text(ax, x + w / 2, ymid - 9.1, f"s{s}", size=4.9, color="#555555")
        x += w + gap
    text(ax, cx - total / 2 - 1.0, ymid - 7.3, "ch", size=5.0, ha="right",
         color="#555555")
    text(ax, cx - total / 2 - 1.0, ymid - 9.1, "stride", size=5.0, ha="right",
         color="#555555")
    text(ax, cx - total / 2 - 1.0, ymid + 4.5, "1×62×128", size=5.0,
         ha="right", color="#555555", rotation=90)

    # flatten + cnn_out
    text(ax, cx, 32.6, "flatten 128×2×4 = 1024", size=5.8, color="#333333")
    arrow(ax, (cx, 31.6), (cx, 30.0), lw=0.9, ms=6)
    ax.add_patch(FancyBboxPatch((x0 + 3.0, 26.4), x1 - x0 - 6.0, 3.4,
                                boxstyle="round,pad=0,rounding_size=0.6",
                                fc="white", ec=edge, lw=0.9, zorder=3))
    text(ax, cx, 28.1, "cnn_out: Linear 1024 → 256, ReLU", size=6.0)

    # The resulting 11 x 256 sequence as 11 coloured cells.
    cmap = plt.get_cmap("viridis")
    cw, cg = 1.55, 0.3
    seq_w = C * cw + (C - 1) * cg
    sx = cx - seq_w / 2
    for i in range(C):
        ax.add_patch(Rectangle((sx + i * (cw + cg), 22.0), cw, 2.2,
                               fc=cmap(0.08 + 0.84 * i / (C - 1)), ec="none",
                               zorder=3))
    text(ax, cx, 20.9, "11 chunk embeddings (11 × 256)", size=5.4,
         color="#333333")


def draw_temporal(ax):
    """Panel 3: the four temporal-modelling options."""
    edge, _ = COL["temp"]
    x0, x1 = 70.0, 102.0
    box(ax, x0, 19.5, x1 - x0, 43.0, "temp")
    cx = (x0 + x1) / 2
    text(ax, cx, 60.0, "Temporal model", size=FS_HEAD, weight="bold",
         color=edge)
    text(ax, cx, 57.4, "on the 11 × 256 chunk sequence (one of four)",
         size=6.0)
    options = [
        ("Temp-GRU", "bidirectional GRU, 2 × 128 hidden",
         "(256 out per chunk)"),
        ("Temp-CNN", "2-D CNN, 5×5 kernels (1→16→1)",
         "over the 11 × 256 map"),
        ("Temp-Trans", "sinusoidal positional encoding",
         "+ 1 Transformer encoder layer"),
        ("Temp-Triplet", "triplet loss on chunk embeddings,",
         "positives within ±2 chunks"),
    ]
    bh, bg = 7.4, 1.25
    y = 54.2
    for name, l1, l2 in options:
        y -= bh
        ax.add_patch(FancyBboxPatch((x0 + 1.6, y), x1 - x0 - 3.2, bh,
                                    boxstyle="round,pad=0,rounding_size=0.8",
                                    fc="white", ec=edge, lw=0.9, zorder=3))
        text(ax, cx, y + bh - 1.7, name, weight="bold", size=6.4, color=edge)
        text(ax, cx, y + bh - 3.9, l1, size=5.9)
        text(ax, cx, y + bh - 5.9, l2, size=5.9)
        y -= bg


def draw_heads(ax):
    """Panel 4: regression head (top) and cluster head (bottom)."""
    x0, x1 = 107.0, 135.0
    cx = (x0 + x1) / 2
    # Regression head
    edge, _ = COL["reg"]
    box(ax, x0, 42.0, x1 - x0, 20.5, "reg")
    text(ax, cx, 60.0, "Regression head", size=FS_HEAD, weight="bold",
         color=edge)
    text(ax, cx, 57.4, "(per chunk)")
    for i, s in enumerate(["emo_regressor:", "Linear 256 → 256, ReLU",
                           "top_layer_attri:", "Linear 256 → 1"]):
        text(ax, cx, 54.0 - 2.6 * i, s, size=6.0,
             weight="bold" if s.endswith(":") else "normal")
    text(ax, cx, 43.7, "trained with the CCC loss", size=5.9,
         style="italic", color=edge)

    # Cluster head
    edge, _ = COL["clu"]
    box(ax, x0, 19.5, x1 - x0, 20.5, "clu")
    text(ax, cx, 37.6, "Cluster head", size=FS_HEAD, weight="bold",
         color=edge)
    text(ax, cx, 35.0, "(per chunk)")
    for i, s in enumerate(["classifier:", "Linear 256 → 256 (+ReLU)",
                           "top_layer_class:", "Linear 256 → K"]):
        text(ax, cx, 31.6 - 2.6 * i, s, size=6.0,
             weight="bold" if s.endswith(":") else "normal")
    text(ax, cx, 21.3, "cross-entropy on pseudo-labels", size=5.9,
         style="italic", color=edge)


def draw_outputs(ax):
    """Panel 5: turn-level prediction and the two losses."""
    x0, x1 = 140.0, 157.5
    cx = (x0 + x1) / 2
    edge, _ = COL["reg"]
    box(ax, x0, 42.0, x1 - x0, 20.5, "reg")
    text(ax, cx, 60.0, "Turn prediction", size=FS_HEAD, weight="bold",
         color=edge)
    text(ax, cx, 57.0, "mean of the 11", size=6.0)
    text(ax, cx, 54.8, "chunk predictions", size=6.0)
    for i, (name, col) in enumerate([("arousal", "#B03A3A"),
                                     ("dominance", "#B03A3A"),
                                     ("valence", "#B03A3A")]):
        y = 51.2 - 2.5 * i
        ax.add_patch(FancyBboxPatch((x0 + 2.5, y - 1.0), x1 - x0 - 5.0, 2.0,
                                    boxstyle="round,pad=0,rounding_size=0.5",
                                    fc="white", ec=col, lw=0.7, zorder=3))
        text(ax, cx, y, name, size=5.8)
    text(ax, cx, 43.6, "one model per attribute", size=5.3, color="#555555")

    edge, _ = COL["clu"]
    box(ax, x0, 19.5, x1 - x0, 20.5, "clu")
    text(ax, cx, 37.6, "Joint loss", size=FS_HEAD, weight="bold", color=edge)
    for i, s in enumerate(["CE (cluster logits,", "pseudo-labels)", "+ CCC loss",
                           "(+ triplet loss)"]):
        text(ax, cx, 34.0 - 2.5 * i, s, size=5.9)
    text(ax, cx, 22.6, "all weighted 1", size=5.3, color="#555555")


def draw_flow(ax):
    """Main left-to-right arrows between the panels."""
    y = 41.0
    arrow(ax, (31.3, y), (35.6, y), lw=1.8, ms=11)
    text(ax, 33.45, y + 2.2, "×11", size=5.6, color="#333333")
    arrow(ax, (66.6, y), (69.6, y), lw=1.8, ms=11)
    # Temporal output splits into the two heads.
    arrow(ax, (102.3, y), (106.6, 52.0), lw=1.6, ms=10, rad=-0.25)
    arrow(ax, (102.3, y), (106.6, 30.0), lw=1.6, ms=10, rad=0.25)
    arrow(ax, (135.3, 52.0), (139.6, 52.0), lw=1.6, ms=10)
    arrow(ax, (135.3, 30.0), (139.6, 30.0), lw=1.6, ms=10)


def draw_loop(ax):
    """Bottom band: the per-epoch clustering feedback loop (right to left)."""
    edge, face = COL["loop"]
    band = FancyBboxPatch((3.0, 1.5), 154.5, 14.2,
                          boxstyle="round,pad=0,rounding_size=1.2",
                          fc=face, ec=edge, lw=1.0, ls=(0, (4, 2)), zorder=0.5)
    ax.add_patch(band)
    text(ax, 85.0, 13.6, "Each epoch: DeepEmoCluster feedback loop",
         size=FS_HEAD - 0.2, weight="bold", color=edge)

    steps = [
        # (x-centre, width, title, subtitle)
        (132.0, 27.0, "Chunk features", "cluster head removed (256-d)"),
        (100.5, 27.0, "k-means with faiss", "K clusters, 20 iterations, L2"),
        (70.5, 24.0, "Pseudo-labels", "chunk → its cluster id"),
        (39.0, 30.0, "Sentence-level uniform sampling",
         "turn weight = Σ over chunks 1/|cluster|"),
    ]
    y0, h = 3.0, 8.2
    for xc, w, t1, t2 in steps:
        ax.add_patch(FancyBboxPatch((xc - w / 2, y0), w, h,
                                    boxstyle="round,pad=0,rounding_size=0.8",
                                    fc="white", ec=edge, lw=1.0, zorder=3))
        text(ax, xc, y0 + h - 2.5, t1, size=6.3, weight="bold", color=edge)
        text(ax, xc, y0 + 2.4, t2, size=5.8)
    ym = y0 + h / 2
    for (xa, wa, _, _), (xb, wb, _, _) in zip(steps[:-1], steps[1:]):
        arrow(ax, (xa - wa / 2 - 0.3, ym), (xb + wb / 2 + 0.3, ym),
              color=edge, lw=1.4, ms=9)

    # Curved feedback arrows: cluster head -> features, sampling -> input.
    arrow(ax, (129.0, 19.3), (138.0, y0 + h + 0.2), color=edge, lw=1.6,
          ms=10, rad=0.35)
    arrow(ax, (24.0, y0 + h / 2), (17.0, 19.2), color=edge, lw=1.6, ms=10,
          rad=-0.45)
    text(ax, 13.6, 7.1, "back into training:\nbatches of B turns\n× 11 chunks",
         size=5.7, color=edge, ha="center", linespacing=1.2)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "framework.png")

    plt.rcParams.update({
        "font.family": "DejaVu Sans",
    })
    fig = plt.figure(figsize=(W * 10 / DPI, H * 10 / DPI), dpi=DPI,
                     facecolor="white")
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, W)
    ax.set_ylim(0, H)
    ax.axis("off")

    text(ax, W / 2, 66.7, "Temporal-Enhanced DeepEmoCluster", size=11.5,
         weight="bold")

    draw_input(ax)
    draw_encoder(ax)
    draw_temporal(ax)
    draw_heads(ax)
    draw_outputs(ax)
    draw_flow(ax)
    draw_loop(ax)

    fig.savefig(out, dpi=DPI, facecolor="white",
                metadata={"Software": None})
    plt.close(fig)
    print(f"wrote {out} ({os.path.getsize(out)} bytes)")


if __name__ == "__main__":
    main()
