"""What fsync costs a stored image: LocalStorage.put with and without its syncs, in one run.

    PYTHONPATH=src python -m benchmarks.storage_fsync [folder]

Stores the same PNG many times each way, alternating rounds so that both see the same disk
weather, and prints the medians and their ratio next to the cost of encoding the PNG (what
the worker does for every image anyway). The folder defaults to a temporary one; pass one on
the volume that will hold ``files/`` to measure that disk.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from castframe.media.images import encode_png
from castframe.media.storage import LocalStorage

ROUNDS = 7
PER_ROUND = 10


def sample_image(size: int) -> np.ndarray:
    """Gradients with noise: compresses about like a generated image."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[:size, :size]
    base = np.stack([xs % 256, ys % 256, (xs + ys) % 256], -1)
    return (base + rng.integers(0, 24, base.shape)).astype(np.uint8)


def per_put(storage: LocalStorage, png: bytes, tag: str) -> float:
    started = time.perf_counter()
    for n in range(PER_ROUND):
        storage.put(f"outputs/bench/{tag}-{n}.png", png, "image/png")
    return (time.perf_counter() - started) / PER_ROUND


def main(folder: Path) -> None:
    plain = LocalStorage(folder / "plain", "http://x", b"k", fsync=False)
    synced = LocalStorage(folder / "synced", "http://x", b"k", fsync=True)
    for size in (16, 1024):
        pixels = sample_image(size)
        started = time.perf_counter()
        png = encode_png(pixels)
        encode = time.perf_counter() - started
        times: dict[str, list[float]] = {"plain": [], "synced": []}
        for round_ in range(ROUNDS):
            times["plain"].append(per_put(plain, png, f"{size}-{round_}"))
            times["synced"].append(per_put(synced, png, f"{size}-{round_}"))
        a, b = statistics.median(times["plain"]), statistics.median(times["synced"])
        print(
            f"{size}x{size} PNG ({len(png) / 1e6:.2f} MB, encoded in {encode * 1e3:.1f} ms): "
            f"put {a * 1e3:.2f} ms, with fsync {b * 1e3:.2f} ms "
            f"(x{b / a:.1f}; encode+put x{(encode + b) / (encode + a):.2f})"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
