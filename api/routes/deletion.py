"""``DELETE /v1/jobs/{id}``: remove a job, its files and its record (see :mod:`sjc_service.retention`).

204: deleted (or deleted lately by the same key: a repeated DELETE answers the same). 202: the job
was active; it is canceled and deleted as soon as it has stopped. 404: no such job of yours.
"""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import CurrentOwner, ServicesDep
from api.ownership import job_not_found
from api.problems import problem_responses
from sjc_service.retention import request_delete, was_deleted

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.delete("/{job_id}", status_code=204, response_class=Response,
               responses={202: {"description": "active job: canceled, deleted once it has stopped"},
                          **problem_responses(401, 404, 503)})
def delete_job(job_id: str, services: ServicesDep, owner: CurrentOwner) -> Response:
    """Cancel the job if it is active, then delete its files and record; finished jobs go at once."""
    record = services.jobs.get(job_id) if len(job_id) <= 64 else None
    if record is None or record.owner != owner:
        if record is None and was_deleted(services.redis, owner, job_id):
            return Response(status_code=204)
        raise job_not_found(job_id[:64])
    outcome = request_delete(services.jobs, services.store, job_id)
    return Response(status_code=202 if outcome == "pending" else 204)
