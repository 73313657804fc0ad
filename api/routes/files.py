"""Downloads from the local-folder store, behind HMAC-signed expiring links (no API key needed).

A link is ``/v1/files/{key}?expires=<unix time>&sig=<hex>`` as made by ``LocalStore.presign_get``;
the signature covers the key and the expiry, so a link opens exactly one file until it expires.
Keys must name a file inside a job's folder (``jobs/{id}/...``, no ``..``): anything else is a 404,
as is every request when the service stores its files in S3.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from api.deps import ServicesDep
from api.problems import Problem, problem_responses
from sjc_service.store import LocalStore, check_key

router = APIRouter(prefix="/files", tags=["files"])


def _not_found(key: str) -> Problem:
    return Problem(404, f"No file {key!r}.", slug="file-not-found", title="File not found")


@router.get("/{key:path}", response_class=FileResponse, responses=problem_responses(403, 404, 422))
def get_file(
    key: str,
    services: ServicesDep,
    expires: Annotated[int, Query(ge=0, le=2**40)],
    sig: Annotated[str, Query(min_length=64, max_length=64, pattern="^[0-9a-f]+$")],
) -> FileResponse:
    """One stored file, if the link's signature is valid and it has not expired."""
    store = services.store
    if not isinstance(store, LocalStore):
        raise _not_found(key)
    try:
        check_key(key)
        parts = key.split("/")
        if len(parts) < 3 or parts[0] != "jobs":
            raise ValueError("outside a job folder")
        path = store.path_for(key)
    except ValueError:
        raise _not_found(key) from None
    if not store.verify(key, expires, sig):
        raise Problem(403, "The link is invalid or has expired; ask GET /v1/jobs/{id}/artifacts for a new one.",
                      slug="bad-signature", title="Invalid or expired link")
    if not path.is_file():
        raise _not_found(key)
    return FileResponse(path, media_type=store.content_type(key), filename=path.name,
                        content_disposition_type="inline")
