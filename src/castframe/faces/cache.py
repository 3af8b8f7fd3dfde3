"""Reference face descriptors, computed once per picture: a bounded, thread-safe LRU keyed by
the reference's content.

The reference's descriptor used to be recomputed for every job (about a quarter of a faces-on
worker's CPU time), although most jobs of a character name the same picture. The key is a
hash of the picture's bytes as received (or of its decoded pixels when there are none), so
the same picture hits whatever URL or upload it came by, and a different picture can never
be mistaken for it. The descriptor is a pure function of those bytes and the face model, so a
cached one gives exactly the verdicts of a fresh one.

Pure (no storage, no database): ``dispatch/character_faces.py`` puts the persistent layer
(an upload's sidecar file) around it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from castframe.bytecache import ByteLRU

DESCRIPTOR_VERSION = "dlib-resnet-v1/5-point/max-side-800/largest-face"
"""What a stored descriptor was computed by. A sidecar written by another version (another
model, detector settings or choice of face) is ignored and recomputed, never trusted."""

DESCRIPTOR_SIZE = 128
ENTRY_BYTES = DESCRIPTOR_SIZE * 8 + 256
"""What one cached face costs: 128 float64 (1 KiB) plus its key and the objects around it."""
CACHE_BYTES = 1024 * ENTRY_BYTES
"""The memory cache's budget: about 1,000 reference faces in 1.3 MiB."""


@dataclass(frozen=True)
class ReferenceFace:
    """The main face's descriptor of one reference picture, or None when it has no face."""

    descriptor: np.ndarray | None


def content_key(raw: bytes, pixels: np.ndarray) -> str:
    """A reference's identity: SHA-256 of its bytes as received, or of its shape and pixels
    when it came without bytes. Hashing 1 MB costs about 1 ms."""
    digest = hashlib.sha256()
    if raw:
        digest.update(b"raw:")
        digest.update(raw)
    else:
        digest.update(f"pixels:{pixels.shape}:{pixels.dtype}:".encode())
        digest.update(np.ascontiguousarray(pixels).data)
    return digest.hexdigest()


class DescriptorCache:
    """The most recently used reference faces, by ``content_key``, within ``max_bytes``
    (castframe/bytecache.py)."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self._faces: ByteLRU[str, ReferenceFace] = ByteLRU(max_bytes, lambda _face: ENTRY_BYTES)

    @property
    def hits(self) -> int:
        return self._faces.hits

    @property
    def misses(self) -> int:
        return self._faces.misses

    def get(self, key: str) -> ReferenceFace | None:
        return self._faces.get(key)

    def put(self, key: str, face: ReferenceFace) -> None:
        self._faces.put(key, face)

    def discard(self, key: str) -> None:
        """Forget a face (its picture's character was deleted)."""
        self._faces.discard(key)

    def __len__(self) -> int:
        return len(self._faces)


def dump_face(key: str, face: ReferenceFace) -> bytes:
    """A sidecar's bytes: the version, the content key and the descriptor (or null)."""
    descriptor = None if face.descriptor is None else [float(v) for v in face.descriptor]
    body = {"version": DESCRIPTOR_VERSION, "content": key, "descriptor": descriptor}
    return json.dumps(body, separators=(",", ":")).encode()


def load_face(key: str, data: bytes) -> ReferenceFace | None:
    """A sidecar read back, or None when it is not a sidecar of this picture and this model
    version (another version, another picture, a truncated or foreign file): the caller then
    recomputes, so a bad sidecar costs time, never a wrong verdict."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict):
        return None
    if body.get("version") != DESCRIPTOR_VERSION or body.get("content") != key:
        return None
    descriptor = body.get("descriptor")
    if descriptor is None:
        return ReferenceFace(None)
    if (
        not isinstance(descriptor, list)
        or len(descriptor) != DESCRIPTOR_SIZE
        or not all(isinstance(v, float | int) and not isinstance(v, bool) for v in descriptor)
    ):
        return None
    values = np.asarray(descriptor, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        return None
    return ReferenceFace(values)
