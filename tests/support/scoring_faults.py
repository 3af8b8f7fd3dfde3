"""Faults for the face-scoring processes (faces/pool.py), injected where they run: these
finders are pickled by name into a spawned process, so they live in an importable module.

Each takes a marker file's path (``functools.partial``): the fault happens while the file
exists and removes it first when it should happen once, so the test decides, not a clock.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np

from castframe.faces.identity import Face
from castframe.faces.pool import find_faces


def dies_once(marker: str, rgb: np.ndarray) -> list[Face]:
    """SIGKILLs its own process mid-image the first time (while ``marker`` exists)."""
    path = Path(marker)
    if path.exists():
        path.unlink()
        os.kill(os.getpid(), signal.SIGKILL)
    return find_faces(rgb)


def always_dies(marker: str, rgb: np.ndarray) -> list[Face]:
    """SIGKILLs its own process mid-image, every time; leaves ``marker`` as a trace."""
    Path(marker).write_text(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def hangs_once(marker: str, rgb: np.ndarray) -> list[Face]:
    """Never answers the first time (while ``marker`` exists): a hung dlib call."""
    path = Path(marker)
    if path.exists():
        path.unlink()
        while True:
            time.sleep(60)
    return find_faces(rgb)


def hangs(marker: str, rgb: np.ndarray) -> list[Face]:
    """Says it has started (writes ``marker``), then never answers."""
    Path(marker).write_text(str(os.getpid()))
    while True:
        time.sleep(60)
