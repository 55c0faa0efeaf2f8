"""A small line chart drawn with Pillow (no plotting library is a dependency).

Used for loss curves in ``python -m cartoondiff.figures curves``: several named series of
(x, y) points on shared axes, optionally with a log-scale y axis.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont

# Colour-blind-safe palette (Okabe-Ito), cycled when there are more series.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
           "#F0E442")


def ema(values: Sequence[float], weight: float) -> list[float]:
    """Debiased exponential moving average, as W&B's and TensorBoard's smoothing sliders
    (weight 0: unchanged). Debiasing keeps the first points from dragging the curve."""
    out, acc = [], 0.0
    for t, v in enumerate(values, start=1):
        acc = weight * acc + (1 - weight) * v
        out.append(acc / (1 - weight ** t) if weight else v)
    return out


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], title: str,
               x_label: str = "step", log_y: bool = False,
               size: tuple[int, int] = (720, 420)) -> Image.Image:
    """One line per named series, a legend, axis ticks at the ends and midpoint."""
    points = [p for s in series.values() for p in s]
    if not points:
        raise ValueError(f"nothing to plot for {title!r}")
    if log_y and min(y for _, y in points) <= 0:
        raise ValueError(f"{title!r}: a log axis needs positive values")
    fy = math.log10 if log_y else float
    x0, x1 = min(x for x, _ in points), max(x for x, _ in points)
    y0, y1 = min(fy(y) for _, y in points), max(fy(y) for _, y in points)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    width, height = size
    left, right, top, bottom = 70, 16, 30, 44
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x0) / (x1 - x0) * (width - left - right)
        py = height - bottom - (fy(y) - y0) / (y1 - y0) * (height - top - bottom)
        return px, py

    draw.rectangle([left, top, width - right, height - bottom], outline="#888888")
    for frac in (0.0, 0.5, 1.0):
        x = x0 + frac * (x1 - x0)
        px = left + frac * (width - left - right)
        x_text = f"{x:.0f}" if x1 - x0 > 10 else f"{x:.2g}"
        draw.text((px - 12, height - bottom + 4), x_text, fill="black", font=font)
        y_axis = y0 + frac * (y1 - y0)
        y = 10 ** y_axis if log_y else y_axis
        py = height - bottom - frac * (height - top - bottom)
        draw.text((4, py - 6), f"{y:.3g}", fill="black", font=font)
    draw.text((width // 2 - 20, height - 18), x_label, fill="black", font=font)
    draw.text((left, 8), f"{title}{'  (log scale)' if log_y else ''}", fill="black",
              font=font)
    for i, (name, pts) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        if len(pts) > 1:
            draw.line([to_px(x, y) for x, y in sorted(pts)], fill=colour, width=2)
        lx, ly = width - right - 240, top + 12 + 14 * i
        draw.line([(lx, ly), (lx + 16, ly)], fill=colour, width=3)
        draw.text((lx + 22, ly - 6), name, fill=colour, font=font)
    return image
