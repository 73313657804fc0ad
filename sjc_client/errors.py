"""Errors the client raises: API errors carry the server's RFC 9457 problem+json message."""

from __future__ import annotations

from typing import Any

import httpx


class SJCClientError(Exception):
    """Base class of every error raised by :mod:`sjc_client`."""


class ApiError(SJCClientError):
    """The API answered with an error status.

    Attributes:
        status: the HTTP status code.
        title: the problem's ``title`` (or the HTTP reason phrase).
        detail: the problem's ``detail`` (or the response text).
        problem: the whole problem+json body (empty when the body was not JSON).
        retry_after: seconds from the ``Retry-After`` header (429/503), else ``None``.
    """

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        problem: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.title = title
        self.detail = detail
        self.problem = problem or {}
        self.retry_after = retry_after
        message = f"{status} {title}"
        if detail and detail != title:
            message += f": {detail}"
        if retry_after is not None:
            message += f" (retry after {retry_after:g} s)"
        super().__init__(message)

    @classmethod
    def from_response(cls, response: httpx.Response) -> "ApiError":
        """Build the error from a response, reading problem+json (or FastAPI's ``{"detail": ...}``)."""
        problem: dict[str, Any] = {}
        try:
            body = response.json()
            if isinstance(body, dict):
                problem = body
        except ValueError:
            pass
        title = str(problem.get("title") or response.reason_phrase or "HTTP error")
        detail = problem.get("detail", "" if problem else response.text.strip())
        if not isinstance(detail, str):  # FastAPI validation errors: a list of dicts
            detail = "; ".join(_describe(d) for d in detail) if isinstance(detail, list) else str(detail)
        retry_after: float | None = None
        header = response.headers.get("retry-after")
        if header is not None:
            try:
                retry_after = float(header)
            except ValueError:
                retry_after = None
        return cls(response.status_code, title, detail, problem, retry_after)


def _describe(item: Any) -> str:
    if isinstance(item, dict) and "msg" in item:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        return f"{where}: {item['msg']}" if where else str(item["msg"])
    return str(item)


class JobFailed(SJCClientError):
    """The job ended as ``failed`` or ``canceled``; ``record`` is its final record."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        self.status = str(record.get("status"))
        error = record.get("error") or {}
        self.code = error.get("code") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        text = f"job {record.get('id')} {self.status}"
        if self.code or message:
            text += f": {self.code or 'error'}: {message or ''}".rstrip(": ")
        super().__init__(text)
