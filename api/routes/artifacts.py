"""A job's files: presigned (S3) or signed (local store) download links with content type and size.

Listed from the object store under ``jobs/{id}/`` (the source of truth: a running job's previews and
checkpoint appear as they are uploaded). The worker's resumable state (``resume/``) is internal and
not listed. ``complete`` is true once ``manifest.json`` (written last) is there.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from api.deps import CurrentOwner, ServicesDep
from api.ownership import owned_job
from api.problems import problem_responses
from sjc_service.keyspace import job_prefix
from sjc_service.schemas import Artifact, JobStatus

router = APIRouter(prefix="/jobs", tags=["artifacts"])
HIDDEN_PREFIXES = ("resume/",)
KINDS = {"field.pt": "checkpoint", "turntable.mp4": "video", "manifest.json": "manifest", "config.json": "config",
         "thumbnail.png": "thumbnail"}


class ArtifactOut(Artifact):
    kind: str


class ArtifactList(BaseModel):
    job_id: str
    status: JobStatus
    complete: bool
    expires_in_s: int
    artifacts: list[ArtifactOut]


def kind_of(name: str) -> str:
    if name in KINDS:
        return KINDS[name]
    if name.startswith("previews/"):
        return "preview"
    return "mesh" if name.startswith("mesh.") else "other"


@router.get("/{job_id}/artifacts", response_model=ArtifactList, responses=problem_responses(401, 404, 503))
def list_artifacts(job_id: str, services: ServicesDep, owner: CurrentOwner) -> ArtifactList:
    """Download links (valid ``expires_in_s`` seconds) for the checkpoint, video, meshes, previews and manifest.

    503 with ``Retry-After`` while the object store is unreachable."""
    record = owned_job(services.jobs, job_id, owner)
    prefix = job_prefix(record.id)
    expiry = services.settings.url_expiry_s
    sha = {a.key: a.sha256 for a in record.artifacts}
    items: list[ArtifactOut] = []
    for obj in services.store.list(prefix):
        name = obj.key[len(prefix):]
        if not name or name.startswith(HIDDEN_PREFIXES):
            continue
        items.append(ArtifactOut(
            name=name, key=obj.key, content_type=obj.content_type, size=obj.size, sha256=sha.get(obj.key),
            url=services.store.presign_get(obj.key, expiry), kind=kind_of(name),
        ))
    complete = any(a.name == "manifest.json" for a in items)
    return ArtifactList(job_id=record.id, status=record.status, complete=complete, expires_in_s=expiry, artifacts=items)
