"""Bearer API keys: ``Authorization: Bearer <key>`` -> the key's owner, or 401 problem+json.

Keys are checked against :class:`sjc_service.keys.ApiKeyStore` (SHA-256 hashes in Redis, constant-time
compare). Every job route filters by the owner this returns; another owner's job is a 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.problems import Problem

bearer_scheme = HTTPBearer(auto_error=False, description="An API key issued to you: `Authorization: Bearer <key>`.")


def current_owner(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> str:
    """The owner of the request's API key; raise 401 when it is missing or unknown."""
    if credentials is None or not credentials.credentials:
        raise Problem(
            401, "Send your API key as 'Authorization: Bearer <key>'.", slug="unauthorized",
            title="Missing API key", headers={"WWW-Authenticate": 'Bearer realm="sjc"'},
        )
    services = request.app.state.services
    services.ensure_keys()
    owner = services.keys.verify(credentials.credentials)
    if owner is None:
        raise Problem(
            401, "The API key is not valid.", slug="unauthorized", title="Invalid API key",
            headers={"WWW-Authenticate": 'Bearer realm="sjc", error="invalid_token"'},
        )
    return str(owner)
