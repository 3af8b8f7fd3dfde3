"""Event bodies in Apiframe v2's shapes, built from the job view at send time."""

from __future__ import annotations

from typing import Any


def event_payload(event: str, view: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``jobId``, ``status`` and the event (as ``event`` and as ``type``, which Apiframe's SDK
    examples read), then the job's own fields in the job object's shapes."""
    payload: dict[str, Any] = {
        "event": event,
        "type": event,
        "jobId": view["id"],
        "status": view["status"],
        "model": view["model"],
    }
    if event == "progress":
        payload["status"] = "PROCESSING"
        payload["progress"] = int(data.get("progress", view["progress"]))
        return payload
    payload["progress"] = view["progress"]
    if view["result"] is not None:
        payload["result"] = view["result"]
    if view["error"] is not None:
        payload["error"] = view["error"]
    if view["errorCode"] is not None:
        payload["errorCode"] = view["errorCode"]
    payload["creditCost"] = view["creditCost"]
    payload["completedAt"] = view["completedAt"]
    return payload
