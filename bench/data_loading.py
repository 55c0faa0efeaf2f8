"""Benchmark: cached uint8 loader vs decoding the PNGs every epoch (prints a table).

Writes ``--n`` synthetic avatars once in Cartoon Set's format (PNG + CSV) into a temp
dir, then times, at ``--image-size`` (crop ``--crop``):

- decoding every PNG (what an epoch costs without a cache), with 1 and 2 processes;
- the first cached run (decode once + write the cache);
- a later run: open the cache and draw one epoch of shuffled, normalized batches.

    python -m bench.data_loading --n 10000 --png-size 500 [--data-dir DIR to keep the PNGs]

Goal: the cached path >= 20x faster than decoding, and 10,000 images in < 5 s.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cartoondiff.data.cartoonset import decode_files, find_images
from cartoondiff.data.dataset import load_avatar_data, normalize


def timed(fn):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def cached_epoch(root: Path, cache_dir: Path, args: argparse.Namespace, scale: bool) -> int:
    """Open the cache (decoding nothing) and draw one shuffled epoch of batches.

    Each batch is uint8 images (B, 3, H, W) + ids (B, 18), like the decoder's output;
    with ``scale`` also turned into the float x0 in [-1, 1] that training consumes.
    """
    data = load_avatar_data("cartoonset", root, image_size=args.image_size, crop=args.crop,
                            labeled=True, cache_dir=cache_dir, progress=False)
    seen = 0
    for idx in torch.randperm(len(data)).split(args.batch_size):
        images, ids = data.images[idx], data.ids[idx]
        if scale:
            images = normalize(images, "pm1")
        seen += min(len(images), len(ids))
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="avatars to write")
    parser.add_argument("--png-size", type=int, default=500, help="PNG side (Cartoon Set: 500)")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--crop", type=int, default=360)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="write the PNGs here and reuse them on later runs (default: temp)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's choice); on a busy "
                        "2-core machine 1 thread gathers small batches several times faster")
    parser.add_argument("--skip-sequential", action="store_true",
                        help="skip timing the 1-process decoder (slowest row)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    crop = min(args.crop, args.png_size)
    args.crop = crop

    from cartoondiff.data.synthesize import write_cartoonset  # lazy: only the bench writes

    rows: list[tuple[str, int, float]] = []
    with tempfile.TemporaryDirectory(prefix="cartoondiff-bench-") as tmp:
        root = args.data_dir or Path(tmp) / "cartoonset"
        cache_dir = Path(tmp) / "cache"  # always fresh: the first cached run must decode
        written = len(list(root.glob("*.png"))) if root.is_dir() else 0
        if written == 0:
            _, secs = timed(lambda: write_cartoonset(root, args.n, args.seed, args.png_size))
            print(f"wrote {args.n} {args.png_size}x{args.png_size} PNG+CSV pairs in {secs:.1f} s")
        elif written != args.n:
            parser.error(f"{root} holds {written} PNGs, not --n {args.n}; use another --data-dir")
        files = find_images(root)

        decoders = [2] if args.skip_sequential else [1, 2]
        for workers in decoders:
            _, secs = timed(lambda w=workers: decode_files(
                files, crop=crop, size=args.image_size, workers=w, progress=False))
            rows.append((f"decode PNGs every epoch, {workers} process(es)", len(files), secs))

        data, secs = timed(lambda: load_avatar_data(
            "cartoonset", root, image_size=args.image_size, crop=crop, labeled=True,
            cache_dir=cache_dir, progress=False))
        rows.append(("cache, first run (decode once + write)", len(data), secs))
        del data

        seen, secs = timed(lambda: cached_epoch(root, cache_dir, args, scale=False))
        rows.append(("cache, later run: open + 1 epoch (uint8)", seen, secs))
        seen, secs = timed(lambda: cached_epoch(root, cache_dir, args, scale=True))
        rows.append(("  same + normalize to float [-1, 1]", seen, secs))

    decode_rate = max(n / s for name, n, s in rows if name.startswith("decode"))
    print(f"\n{args.n} avatars, {args.png_size} px PNGs -> crop {crop} -> {args.image_size} px, "
          f"batch {args.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"{'path':<46} {'images':>7} {'seconds':>8} {'images/s':>10} {'vs decode':>10}")
    for name, n, secs in rows:
        rate = n / secs
        print(f"{name:<46} {n:>7} {secs:>8.2f} {rate:>10.0f} {rate / decode_rate:>9.1f}x")


if __name__ == "__main__":
    main()
