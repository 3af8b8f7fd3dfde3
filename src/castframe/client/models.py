"""Typed results of the SDK: jobs, images, errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TERMINAL = ("COMPLETED", "FAILED", "CANCELED")


class CastframeError(Exception):
    """An error answer from the server (or the network), with the server's stable code."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.details = details or []


@dataclass(frozen=True)
class Consistency:
    face_detected: bool
    distance: float | None
    same_character: bool | None


@dataclass(frozen=True)
class Image:
    url: str
    width: int
    height: int
    seed: int
    prompt: str
    content_type: str
    consistency: Consistency | None = None


@dataclass(frozen=True)
class JobError:
    code: str
    message: str


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    model: str
    progress: int
    credit_cost: int
    images: list[Image] = field(default_factory=list)
    error: JobError | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        images = []
        for item in (data.get("result") or {}).get("images", []):
            score = item.get("consistency")
            images.append(
                Image(
                    url=item["url"],
                    width=int(item["width"]),
                    height=int(item["height"]),
                    seed=int(item["seed"]),
                    prompt=str(item.get("prompt", "")),
                    content_type=str(item.get("contentType", "image/png")),
                    consistency=Consistency(
                        score["faceDetected"], score["distance"], score["sameCharacter"]
                    )
                    if score
                    else None,
                )
            )
        error = data.get("error")
        return cls(
            id=data["id"],
            status=data["status"],
            model=data.get("model", ""),
            progress=int(data.get("progress") or 0),
            credit_cost=int(data.get("creditCost") or 0),
            images=images,
            error=JobError(error["code"], error["message"]) if error else None,
            raw=data,
        )
