"""Python SDK for Castframe and any Apiframe-v2 server (Apiframe itself included).

    from castframe.client import Castframe

    with Castframe(api_key="afk_live_...") as cf:
        job = cf.generate("a knight in a misty forest", reference="me.jpg", style_type="REALISTIC")
        paths = cf.download(job, "images/")

Every submission carries an ``Idempotency-Key`` that is reused when the SDK retries, so a
retry after a timeout never creates (or charges) a second job.
"""

from castframe.client.asynchronous import AsyncCastframe
from castframe.client.models import (
    ApiKey,
    CastframeError,
    Consistency,
    Image,
    Job,
    JobPage,
    Me,
    Model,
    Team,
    Upload,
    User,
)
from castframe.client.sync import Castframe

__all__ = [
    "ApiKey",
    "AsyncCastframe",
    "Castframe",
    "CastframeError",
    "Consistency",
    "Image",
    "Job",
    "JobPage",
    "Me",
    "Model",
    "Team",
    "Upload",
    "User",
]
