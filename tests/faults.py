"""Run ``run.py`` with one fault injected, for tests/test_reliability.py.

    python -m tests.faults [--kill-in-step N] [--kill-in-save NAME] [--term-in-step N] -- \\
        <run.py overrides>

The faults are patched in from outside, so the library carries no test-only hooks:
``--kill-in-step N``  SIGKILL during the forward pass of this process's N-th training step;
``--kill-in-save NAME``  SIGKILL after half of file NAME (e.g. ``ckpt-step000000006.pt``) is
    on disk: the torch.save into its temporary file writes half its bytes, then dies;
``--term-in-step N``  SIGTERM to itself during step N (as a scheduler's preemption would).
"""

from __future__ import annotations

import argparse
import io
import os
import runpy
import signal
import struct
import sys
import zipfile
from pathlib import Path

import torch

from cartoondiff.diffusion import Diffusion


def flip_a_tensor_bit(path: Path) -> None:
    """Flip one bit inside the largest stored tensor of a torch zip file (a disk or copy
    error that torch.load alone does not notice)."""
    with zipfile.ZipFile(path) as archive:
        info = max(archive.infolist(), key=lambda i: i.file_size)
    raw = bytearray(path.read_bytes())
    at = info.header_offset
    name_len, extra_len = struct.unpack("<HH", raw[at + 26 : at + 30])  # local file header
    raw[at + 30 + name_len + extra_len + info.file_size // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def _on_step(n: int, sig: signal.Signals) -> None:
    """Send ``sig`` to this process inside the n-th call of Diffusion.loss (one per step)."""
    real_loss = Diffusion.loss
    calls = 0

    def loss(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        nonlocal calls
        calls += 1
        if calls == n:
            os.kill(os.getpid(), sig)
        return real_loss(self, *args, **kwargs)

    Diffusion.loss = loss


def _kill_in_save(name: str) -> None:
    """Die half-way through writing ``name`` (its temporary file is ``name.<random>.tmp``)."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        # save_atomic hands torch.save an open file descriptor; /proc names its file (Linux).
        target = Path(os.readlink(f"/proc/self/fd/{f.fileno()}")).name
        if not target.startswith(name + "."):
            return real_save(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill-in-step", type=int)
    parser.add_argument("--kill-in-save")
    parser.add_argument("--term-in-step", type=int)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.kill_in_step:
        _on_step(args.kill_in_step, signal.SIGKILL)
    if args.term_in_step:
        _on_step(args.term_in_step, signal.SIGTERM)
    if args.kill_in_save:
        _kill_in_save(args.kill_in_save)
    # The real entry point, Hydra and all, run as `python run.py` runs it.
    sys.argv = ["run.py", *args.overrides]
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "run.py"), run_name="__main__")


if __name__ == "__main__":
    main()
