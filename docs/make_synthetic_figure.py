"""Make docs/figures/synthetic_vs_real.png: real Cartoon Set avatars above synthetic ones.

Both rows use the blog's preprocessing view (centre crop 360 px of the 500 px frame),
shown at 128 px. Real images come from ../shared/data/cartoonset_sample (not in the repo).

    python docs/make_synthetic_figure.py [--real DIR] [--out PATH] [--cols 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from anywhere without installing the package

from cartoondiff.data.synthesize import render_avatar, sample_ids  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "cartoonset_sample"
CROP, TILE, LABEL_H = 360, 128, 22


def real_tile(path: Path) -> Image.Image:
    """A real avatar composited on white, centre-cropped to CROP and resized to TILE."""
    rgba = Image.open(path).convert("RGBA")
    im = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    x0 = (im.width - CROP) // 2
    y0 = (im.height - CROP) // 2
    box = (x0, y0, x0 + CROP, y0 + CROP)
    return im.resize((TILE, TILE), Image.Resampling.LANCZOS, box=box)


def make_figure(real_dir: Path, cols: int, seed: int, rows_each: int = 2) -> Image.Image:
    """Grid: ``rows_each`` rows of real avatars, then as many rows of synthetic ones."""
    files = sorted(real_dir.glob("*.png"))[: cols * rows_each]
    if len(files) < cols * rows_each:
        raise SystemExit(f"{real_dir}: need {cols * rows_each} PNG files, found {len(files)}")
    real = [real_tile(f) for f in files]
    synth = [render_avatar(sample_ids(seed, i), TILE, crop=CROP) for i in range(len(files))]
    block_h = LABEL_H + rows_each * TILE
    fig = Image.new("RGB", (cols * TILE, 2 * block_h), "white")
    draw = ImageDraw.Draw(fig)
    for b, (label, tiles) in enumerate((("real Cartoon Set (centre crop 360)", real),
                                        ("cartoondiff synthetic (same crop)", synth))):
        y = b * block_h
        draw.rectangle((0, y, fig.width, y + LABEL_H - 1), fill=(235, 235, 235))
        draw.text((6, y + 5), label, fill=(20, 20, 20))
        for i, tile in enumerate(tiles):
            fig.paste(tile, ((i % cols) * TILE, y + LABEL_H + (i // cols) * TILE))
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REAL, help="folder of real Cartoon Set PNGs")
    parser.add_argument("--out", type=Path, default=ROOT / "docs/figures/synthetic_vs_real.png")
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    make_figure(args.real, args.cols, args.seed).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
