"""After the engine: score each output against the reference, encode it, store it.

CPU work that used to run in the engine's slot, in series with it; the pipeline
(dispatch/pipeline.py) runs it in a bounded pool while the engine is on the next job. Nothing
here writes to the database: the job is completed (charged, its webhook queued) by the worker
only after ``store_outputs`` returned, so a completed job's files are always there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from castframe.catalog.base import SAVED_CHARACTER_PARAM
from castframe.dispatch.character_faces import CharacterDescriptors
from castframe.dispatch.inputs import Loaded
from castframe.engines.base import EngineRequest, EngineResult, RunHooks
from castframe.faces import consistency, face_model
from castframe.faces.identity import FaceFinder
from castframe.faces.pool import FacePool
from castframe.jobs.record import Job
from castframe.media.images import OUTPUT_FORMATS, encode_image
from castframe.media.storage import Storage, put_all


def output_format_of(job: Job) -> str:
    """The job's ``output_format`` (jobs queued before the extension existed: PNG)."""
    chosen = job.params.get("output_format") or "png"
    return chosen if chosen in OUTPUT_FORMATS else "png"


def output_key(
    job_id: str,
    created_at: float,
    index: int,
    seed: int,
    output_format: str = "png",
    attempt: int = 1,
) -> str:
    """Where an attempt's ``index``-th image is stored:
    ``outputs/<UTC day>/<job>-a<attempt>-<n>-<seed>.<ext>``.

    One folder per day, not per job: creating a folder per job cost local storage a new
    directory inode per job (~0.2 ms of kernel time), and day folders are what retention and
    backups work by (on S3 too, as key prefixes for lifecycle rules). The day is the job's
    creation day. Each attempt writes its own keys: a worker that lost its lease and then
    stores (or cleans up after a failed store) can never overwrite or delete the files of the
    attempt that completed the job, and what it stored in vain it deletes itself.
    """
    day = time.strftime("%Y-%m-%d", time.gmtime(created_at))
    extension = OUTPUT_FORMATS[output_format][1]
    return f"outputs/{day}/{job_id}-a{attempt}-{index}-{seed}.{extension}"


def stored_keys(result: dict[str, Any] | None) -> list[str]:
    """The storage keys of a job ``result``'s images."""
    return [image["key"] for image in (result or {}).get("images", []) if "key" in image]


@dataclass(frozen=True)
class Prepared:
    """A claimed job with its inputs loaded and decoded: what the engine needs, and the
    reference as read (its bytes key the descriptor cache; its upload holds the sidecar)."""

    job: Job
    request: EngineRequest
    reference: Loaded | None
    """The character reference as read; None for a model or job without one (nothing is
    scored then)."""
    hooks: RunHooks
    """The job's progress and cancellation hooks, one for all its stages (its throttles
    then span them: a job checked for cancellation at its claim is not asked again at once)."""


class PostProcessor:
    """Scores, encodes and stores one job's outputs (thread-safe: called from the pool)."""

    def __init__(
        self,
        storage: Storage,
        characters: CharacterDescriptors,
        faces: bool,
        face_pool: FacePool | None = None,
    ) -> None:
        """``face_pool``: score in its processes (faces/pool.py); None: in this process."""
        self.storage = storage
        self.characters = characters
        self.faces = faces
        self.face_pool = face_pool

    def finder(self) -> FaceFinder | None:
        """Who finds faces: the process pool, this process's model, or nobody (faces off,
        or the extra not installed: no scores are claimed)."""
        if not self.faces:
            return None
        if self.face_pool is not None:
            return self.face_pool
        return face_model()

    def consistency(
        self, prepared: Prepared, result: EngineResult
    ) -> list[dict[str, Any] | None] | None:
        """Per image: does the output's best face match the reference's main face?

        The verdict is computed here from the faces found (wherever they were found), so the
        pool's verdicts are the in-process ones by construction.
        """
        if prepared.reference is None:
            return None  # no character: nothing to be consistent with, no field at all
        finder = self.finder()
        if finder is None:
            return [None] * len(result.images)
        job = prepared.job
        reference = self.characters.descriptor(
            (job.account_id, job.mode),
            job.params.get(SAVED_CHARACTER_PARAM),
            prepared.reference.image,
            finder,
            upload_key=prepared.reference.storage_key,
        )
        found = finder.faces_many([image.pixels for image in result.images])
        return [consistency(reference, faces) for faces in found]

    def store_outputs(
        self, job: Job, result: EngineResult, scores: list[dict[str, Any] | None] | None
    ) -> dict[str, Any]:
        """Encode and store every image; the job's ``result`` (keys, sizes, scores: None for
        a job without a character, whose images then carry no ``consistency``)."""
        chosen = output_format_of(job)
        content_type = OUTPUT_FORMATS[chosen][0]
        images = []
        files = []
        scored = scores is not None
        for index, (image, score) in enumerate(
            zip(result.images, scores or [None] * len(result.images), strict=True)
        ):
            data = encode_image(image.pixels, chosen)
            key = output_key(job.id, job.created_at, index, image.seed, chosen, job.attempts)
            files.append((key, data, content_type))
            images.append(
                {
                    "key": key,
                    "width": int(image.pixels.shape[1]),
                    "height": int(image.pixels.shape[0]),
                    "seed": image.seed,
                    "prompt": image.prompt,
                    "contentType": content_type,
                    **({"consistency": score} if scored else {}),
                    **({"metadata": image.metadata} if image.metadata else {}),
                }
            )
        put_all(self.storage, files)  # all or none: a failure removes those it stored
        return {"images": images, "metadata": result.metadata}
