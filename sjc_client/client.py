"""``SJCClient``: submit text-to-3D jobs, follow their progress and download the results.

Every call maps to one route of the API (see README.md, "The API by example"); errors come back as
:class:`~sjc_client.errors.ApiError` carrying the server's problem+json message. Progress is read
from the job's Server-Sent Events stream, resumed with ``Last-Event-ID`` after a dropped connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from sjc_client.errors import ApiError, JobFailed, SJCClientError
from sjc_client.sse import SSEEvent, SSEParser, parse_sse

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})
ProgressCallback = Callable[[str, Any], None]


class SJCClient:
    """A synchronous client of the SJC jobs API.

    Args:
        base_url: the API's address, e.g. ``"http://127.0.0.1:8000"``.
        api_key: the bearer API key (sent as ``Authorization: Bearer <key>``); ``None`` sends none.
        timeout: seconds for ordinary requests.
        stream_read_timeout: seconds without any byte (event or heartbeat) after which the event
            stream counts as lost and is reconnected.
        reconnect_delay: seconds between reconnects of the event stream (a ``retry:`` field from the
            server overrides it).
        max_reconnects: consecutive failed connections of the event stream before giving up.
        poll_interval: seconds between status polls when no event stream can tell the end of a job.
        rate_limit_retries: times a request refused for the key's request rate (429 ``rate-limited``) is
            sent again after its ``Retry-After`` (at most ``max_retry_after`` seconds); 0 raises at once.
        max_retry_after: longest ``Retry-After`` the client waits out by itself, seconds.
        transport: an ``httpx`` transport (tests pass ``httpx.MockTransport``).
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        stream_read_timeout: float = 60.0,
        reconnect_delay: float = 1.0,
        max_reconnects: int = 10,
        poll_interval: float = 2.0,
        rate_limit_retries: int = 3,
        max_retry_after: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.stream_read_timeout = stream_read_timeout
        self.reconnect_delay = reconnect_delay
        self.max_reconnects = max_reconnects
        self.poll_interval = poll_interval
        self.rate_limit_retries = rate_limit_retries
        self.max_retry_after = max_retry_after
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)
        # Artifact links are presigned: they go out without our Authorization header (S3 refuses two).
        self._plain = httpx.Client(timeout=timeout, transport=transport, follow_redirects=True)

    # -- plumbing -------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()
        self._plain.close()

    def __enter__(self) -> "SJCClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(self.rate_limit_retries + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                raise SJCClientError(f"cannot reach the SJC API at {self.base_url}: {exc}") from exc
            if response.status_code >= 400:
                error = ApiError.from_response(response)
                wait = error.retry_after
                rate_limited = str(error.problem.get("type", "")).endswith(":rate-limited")
                if (rate_limited and wait is not None and wait <= self.max_retry_after
                        and attempt < self.rate_limit_retries):
                    time.sleep(wait)  # a refused request changed nothing: sending it again is safe
                    continue
                raise error
            break
        if not response.content:
            return None
        return response.json()

    # -- jobs -----------------------------------------------------------------------------------

    def submit(self, prompt: str, *, idempotency_key: str | None = None, **params: Any) -> dict[str, Any]:
        """Create a job (``POST /v1/jobs``) and return its record.

        Args:
            prompt: the text prompt, e.g. ``"a red cube"``.
            idempotency_key: sent as ``Idempotency-Key``: repeating the call returns the same job.
            **params: job settings (``model``, ``seed``, ``steps``, ``guidance_scale``, ``grid_size``,
                ``outputs``, ``mesh_formats``, ...); ``None`` values are left out (server defaults).
        """
        body = {"prompt": prompt, **{k: v for k, v in params.items() if v is not None}}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._request("POST", "/v1/jobs", json=body, headers=headers)

    def get(self, job_id: str) -> dict[str, Any]:
        """The job's current record (``GET /v1/jobs/{id}``)."""
        return self._request("GET", f"/v1/jobs/{job_id}")

    def list(self, *, status: str | None = None, cursor: str | None = None, limit: int = 20) -> dict[str, Any]:
        """One page of the caller's jobs, newest first (``GET /v1/jobs``); pass the page's cursor on."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        if cursor:
            params["cursor"] = cursor
        return self._request("GET", "/v1/jobs", params=params)

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask for the job to stop (``POST /v1/jobs/{id}/cancel``); a running job stops at its next check."""
        return self._request("POST", f"/v1/jobs/{job_id}/cancel")

    def delete(self, job_id: str) -> bool:
        """Delete the job, its files and record (``DELETE /v1/jobs/{id}``); an active job is canceled first.

        Returns ``True`` when it is gone now, ``False`` when the deletion waits for the job to stop.
        """
        try:
            response = self._http.request("DELETE", f"/v1/jobs/{job_id}")
        except httpx.TransportError as exc:
            raise SJCClientError(f"cannot reach the SJC API at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise ApiError.from_response(response)
        return response.status_code != 202

    def usage(self) -> dict[str, Any]:
        """Your key's jobs by status, compute seconds and rate limit (``GET /v1/usage``)."""
        return self._request("GET", "/v1/usage")

    def webhook_secret(self) -> str:
        """The ``whsec_`` secret that signs your jobs' webhooks (``GET /v1/webhook-secret``)."""
        return str(self._request("GET", "/v1/webhook-secret")["secret"])

    def models(self) -> Any:
        """The models the service can use (``GET /v1/models``)."""
        return self._request("GET", "/v1/models")

    def ready(self) -> Any:
        """``GET /readyz``: raises :class:`ApiError` while Redis or the object store is unreachable."""
        return self._request("GET", "/readyz")

    # -- progress -------------------------------------------------------------------------------

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[SSEEvent]:
        """Follow the job's event stream (``GET /v1/jobs/{id}/events``), yielding ``(id, event, data)``.

        Events: ``state`` (status/stage changes), ``progress`` (step, total, progress, losses, eta_s),
        ``preview`` (artifact key) and ``done`` (final record), after which the iteration ends. A
        dropped connection is reopened with ``Last-Event-ID`` so no event is lost or repeated; the
        iteration also ends when the stream closes and the job is already finished.

        Args:
            job_id: the job.
            last_event_id: resume after this event id (``None``: from the first event).
        """
        last = last_event_id
        failures = 0
        delay = self.reconnect_delay
        timeout = httpx.Timeout(self.timeout, read=self.stream_read_timeout)
        while True:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = last
            problem: Exception | None = None
            try:
                with self._http.stream(
                    "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        error = ApiError.from_response(response)
                        if response.status_code < 500 and response.status_code not in (408, 429):
                            raise error
                        problem = error
                    else:
                        parser = SSEParser(last_event_id=last)
                        for event in parse_sse(response.iter_lines(), parser):
                            last = parser.last_event_id
                            failures = 0
                            yield event
                            if event.event == "done":
                                return
                        last = parser.last_event_id
                        if parser.retry_ms is not None:
                            delay = parser.retry_ms / 1000.0
            except httpx.TransportError as exc:  # connect errors, read timeouts, cut connections
                problem = exc
            if problem is None and self.get(job_id).get("status") in TERMINAL_STATUSES:
                return  # the server closed the stream of a finished job
            failures += 1
            if failures > self.max_reconnects:
                raise SJCClientError(
                    f"lost the event stream of job {job_id} after {self.max_reconnects} reconnects: "
                    f"{problem or 'the server kept closing it'}"
                )
            time.sleep(delay)

    def wait(self, job_id: str, on_progress: ProgressCallback | None = None) -> dict[str, Any]:
        """Follow the job to its end and return its final record.

        Args:
            job_id: the job.
            on_progress: called as ``on_progress(event, data)`` for every event of the stream.

        Raises:
            JobFailed: the job ended ``failed`` or ``canceled`` (its error code and message included).
        """
        for event in self.events(job_id):
            if on_progress is not None:
                on_progress(event.event, event.data)
        record = self.get(job_id)
        while record.get("status") not in TERMINAL_STATUSES:  # the "done" event raced the record
            time.sleep(self.poll_interval)
            record = self.get(job_id)
        if record["status"] != "succeeded":
            raise JobFailed(record)
        return record

    # -- results --------------------------------------------------------------------------------

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        """The job's files (``GET /v1/jobs/{id}/artifacts``): name, key, content_type, size, url."""
        body = self._request("GET", f"/v1/jobs/{job_id}/artifacts")
        if isinstance(body, dict):
            body = body.get("artifacts", body.get("items", []))
        return list(body)

    def download(
        self, job_id: str, out_dir: str | Path, *, skip_prefixes: tuple[str, ...] = ("resume/",)
    ) -> list[Path]:
        """Download the job's artifacts into ``out_dir`` (keeping ``previews/`` etc.); return the paths.

        Args:
            job_id: the job.
            out_dir: the folder to write into (created).
            skip_prefixes: artifact paths not to download (by default the resumable training state).
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for artifact in self.artifacts(job_id):
            rel = _relative_name(job_id, artifact)
            if rel.startswith(skip_prefixes):
                continue
            url = artifact.get("url")
            if not url:
                raise SJCClientError(f"artifact {rel!r} of job {job_id} has no download URL")
            path = out / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fetch(url, path)
            size = artifact.get("size")
            if size is not None and path.stat().st_size != int(size):
                raise SJCClientError(f"{rel}: downloaded {path.stat().st_size} bytes, expected {size}")
            written.append(path)
        return written

    def _fetch(self, url: str, path: Path) -> None:
        absolute = urljoin(self.base_url + "/", url)
        same_origin = urlsplit(absolute)[:2] == urlsplit(self.base_url)[:2]
        client = self._http if same_origin else self._plain
        try:
            with client.stream("GET", absolute) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ApiError.from_response(response)
                with open(path, "wb") as f:
                    for chunk in response.iter_bytes():
                        f.write(chunk)
        except httpx.TransportError as exc:
            raise SJCClientError(f"cannot download {absolute}: {exc}") from exc


def _relative_name(job_id: str, artifact: dict[str, Any]) -> str:
    """The artifact's path below ``jobs/{id}/``, refusing anything that would leave the folder."""
    key = str(artifact.get("key") or "")
    prefix = f"jobs/{job_id}/"
    rel = key[len(prefix):] if key.startswith(prefix) else str(artifact.get("name") or key)
    parts = PurePosixPath(rel).parts
    if not parts or rel.startswith("/") or any(p in ("..", "") for p in parts):
        raise SJCClientError(f"refusing artifact path {rel!r} of job {job_id}")
    return rel
