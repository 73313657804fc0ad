"""SJCClient against httpx.MockTransport: error surfacing, SSE reconnects, wait, download, CLI."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from sjc_client import ApiError, JobFailed, SJCClient, SJCClientError
from sjc_client import cli

BASE = "http://api.test"
Handler = Callable[[httpx.Request], httpx.Response]


def make_client(handler: Handler, **kwargs) -> SJCClient:
    kwargs.setdefault("reconnect_delay", 0.0)
    kwargs.setdefault("poll_interval", 0.0)
    return SJCClient(BASE, "secret-key", transport=httpx.MockTransport(handler), **kwargs)


def sse(*events: tuple[str, str, dict]) -> bytes:
    return "".join(f"id: {i}\nevent: {e}\ndata: {json.dumps(d)}\n\n" for i, e, d in events).encode()


def problem(status: int, title: str, detail: str, **headers: str) -> httpx.Response:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return httpx.Response(status, json=body, headers={"content-type": "application/problem+json", **headers})


# -- errors -----------------------------------------------------------------------------------------

def test_problem_json_is_surfaced_with_its_message():
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return problem(422, "Invalid job", "steps must be at most 20000")

    with pytest.raises(ApiError) as info:
        make_client(handler).submit("a red cube", steps=10**6, seed=None)
    assert info.value.status == 422
    assert "steps must be at most 20000" in str(info.value)
    request = seen[0]
    assert request.headers["authorization"] == "Bearer secret-key"
    assert json.loads(request.content) == {"prompt": "a red cube", "steps": 10**6}  # None left out


def test_rate_limit_carries_retry_after_and_non_json_errors_keep_their_text():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/jobs" and request.method == "POST":
            return problem(429, "Too many active jobs", "4 jobs are active for this key", **{"retry-after": "3"})
        return httpx.Response(502, text="bad gateway from proxy")

    client = make_client(handler)
    with pytest.raises(ApiError) as info:
        client.submit("a red cube", idempotency_key="k1")
    assert info.value.retry_after == 3.0 and "4 jobs are active" in str(info.value)
    with pytest.raises(ApiError) as info:
        client.get("abc")
    assert info.value.status == 502 and "bad gateway from proxy" in str(info.value)


def test_fastapi_validation_list_is_readable():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(422, json={"detail": [{"loc": ["body", "steps"], "msg": "too big"}]})

    with pytest.raises(ApiError, match="steps: too big"):
        make_client(handler).submit("a red cube")


def test_unreachable_server_is_a_client_error():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(SJCClientError, match="cannot reach"):
        make_client(handler).get("abc")


# -- event stream -----------------------------------------------------------------------------------

def cut_after(chunks: list[bytes]) -> Iterator[bytes]:
    """A response body that breaks off after ``chunks`` like a dropped connection."""
    yield from chunks
    raise httpx.ReadError("connection reset")


def test_events_reconnect_with_last_event_id():
    headers_seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/jobs/j1/events"
        headers_seen.append(request.headers.get("last-event-id"))
        if len(headers_seen) == 1:
            body = sse(("1-0", "state", {"status": "running"}), ("2-0", "progress", {"step": 5, "total": 10}))
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=cut_after([b": heartbeat\n\n", body, b"id: 3-0\ndata: {\"half"]))
        if len(headers_seen) == 2:
            raise httpx.ConnectError("refused", request=request)  # the API restarting
        return httpx.Response(200, content=sse(("3-0", "progress", {"step": 10, "total": 10}),
                                               ("4-0", "done", {"status": "succeeded"})))

    events = list(make_client(handler).events("j1"))
    assert [(e.id, e.event) for e in events] == [("1-0", "state"), ("2-0", "progress"), ("3-0", "progress"),
                                                ("4-0", "done")]
    # The half-received event 3-0 was not dispatched, so the reconnects resume after 2-0.
    assert headers_seen == [None, "2-0", "2-0"]


def test_events_start_from_given_id_and_end_when_closed_on_finished_job():
    calls = {"events": 0, "get": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            calls["events"] += 1
            assert request.headers["last-event-id"] == "9-0"
            return httpx.Response(200, content=b": heartbeat\n\n")  # closes without a done event
        calls["get"] += 1
        return httpx.Response(200, json={"id": "j1", "status": "canceled"})

    assert list(make_client(handler).events("j1", last_event_id="9-0")) == []
    assert calls == {"events": 1, "get": 1}


def test_events_give_up_after_max_reconnects_and_do_not_retry_404():
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(SJCClientError, match="after 2 reconnects"):
        list(make_client(down, max_reconnects=2).events("j1"))

    calls: list[int] = []

    def missing(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return problem(404, "Not Found", "no job j1")

    with pytest.raises(ApiError, match="no job j1"):
        list(make_client(missing).events("j1"))
    assert len(calls) == 1


# -- wait -------------------------------------------------------------------------------------------

def job_server(final: dict) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return httpx.Response(200, content=sse(("1-0", "progress", {"step": 1, "total": 2}),
                                                   ("2-0", "done", final)))
        return httpx.Response(200, json=final)

    return handler


def test_wait_returns_record_and_reports_progress():
    final = {"id": "j1", "status": "succeeded", "progress": 100}
    seen: list[tuple[str, object]] = []
    record = make_client(job_server(final)).wait("j1", on_progress=lambda e, d: seen.append((e, d)))
    assert record == final
    assert seen == [("progress", {"step": 1, "total": 2}), ("done", final)]


@pytest.mark.parametrize("status", ["failed", "canceled"])
def test_wait_raises_job_failed_with_the_error_message(status):
    final = {"id": "j1", "status": status, "error": {"code": "prompt_rejected", "message": "unknown word 'dog'"}}
    with pytest.raises(JobFailed) as info:
        make_client(job_server(final)).wait("j1")
    assert info.value.status == status
    assert "prompt_rejected" in str(info.value) and "unknown word 'dog'" in str(info.value)


# -- download ---------------------------------------------------------------------------------------

def artifact_server(artifacts: list[dict], files: dict[str, bytes], auth_seen: dict[str, str | None]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/jobs/j1/artifacts":
            return httpx.Response(200, json={"artifacts": artifacts})
        auth_seen[str(request.url.host) + request.url.path] = request.headers.get("authorization")
        return httpx.Response(200, content=files[request.url.path])

    return handler


def test_download_writes_files_under_their_names(tmp_path: Path):
    files = {"/v1/files/jobs/j1/mesh.glb": b"glTF-bytes", "/bucket/jobs/j1/previews/0001.png": b"\x89PNG..",
             "/bucket/jobs/j1/resume/state.pt": b"big"}
    artifacts = [
        {"name": "mesh.glb", "key": "jobs/j1/mesh.glb", "size": 10, "url": "/v1/files/jobs/j1/mesh.glb?sig=abc"},
        {"name": "previews/0001.png", "key": "jobs/j1/previews/0001.png", "size": 6,
         "url": "http://s3.test/bucket/jobs/j1/previews/0001.png?X-Amz-Signature=x"},
        {"name": "resume/state.pt", "key": "jobs/j1/resume/state.pt", "size": 3,
         "url": "http://s3.test/bucket/jobs/j1/resume/state.pt"},
    ]
    auth: dict[str, str | None] = {}
    paths = make_client(artifact_server(artifacts, files, auth)).download("j1", tmp_path / "out")
    assert [p.relative_to(tmp_path / "out").as_posix() for p in paths] == ["mesh.glb", "previews/0001.png"]
    assert (tmp_path / "out" / "mesh.glb").read_bytes() == b"glTF-bytes"
    assert (tmp_path / "out" / "previews" / "0001.png").read_bytes() == b"\x89PNG.."
    # Our key goes only to our own API, never to the object store's presigned links.
    assert auth == {"api.test/v1/files/jobs/j1/mesh.glb": "Bearer secret-key",
                    "s3.test/bucket/jobs/j1/previews/0001.png": None}


def test_download_checks_sizes_and_refuses_escaping_paths(tmp_path: Path):
    bad_size = [{"name": "mesh.glb", "key": "jobs/j1/mesh.glb", "size": 99, "url": "/f/mesh.glb"}]
    with pytest.raises(SJCClientError, match="expected 99"):
        make_client(artifact_server(bad_size, {"/f/mesh.glb": b"short"}, {})).download("j1", tmp_path)
    escaping = [{"name": "../../etc/passwd", "key": "other/../../etc/passwd", "url": "/f/x"}]
    with pytest.raises(SJCClientError, match="refusing"):
        make_client(artifact_server(escaping, {}, {})).download("j1", tmp_path)


# -- CLI --------------------------------------------------------------------------------------------

def fake_service(final_status: str) -> Handler:
    final = {"id": "j1", "status": final_status,
             "error": None if final_status == "succeeded" else {"code": "worker_lost", "message": "gave up"}}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/v1/jobs" and request.method == "POST":
            assert json.loads(request.content) == {"prompt": "a red cube", "steps": 50, "guidance_scale": 7.5,
                                                 "video_frames": 4, "sigma_schedule": "annealed"}
            return httpx.Response(202, json={"id": "j1", "status": "queued"})
        if path.endswith("/events"):
            return httpx.Response(200, content=sse(("1-0", "state", {"status": "running", "stage": "optimizing"}),
                                                   ("2-0", "progress", {"step": 50, "total": 50, "eta_s": 0}),
                                                   ("3-0", "done", final)))
        if path == "/v1/jobs/j1":
            return httpx.Response(200, json=final)
        if path == "/v1/jobs/j1/artifacts":
            return httpx.Response(200, json=[{"name": "mesh.glb", "key": "jobs/j1/mesh.glb", "size": 4,
                                              "url": f"{BASE}/v1/files/jobs/j1/mesh.glb"}])
        if path == "/v1/files/jobs/j1/mesh.glb":
            return httpx.Response(200, content=b"glb!")
        return httpx.Response(404, json={"title": "Not Found", "detail": path})

    return handler


@pytest.mark.parametrize("status,code", [("succeeded", 0), ("failed", 1)])
def test_cli_submit_wait_downloads_or_exits_non_zero(monkeypatch, tmp_path, capsys, status, code):
    transport = httpx.MockTransport(fake_service(status))
    monkeypatch.setattr(cli, "SJCClient", lambda url, key: SJCClient(url, key, transport=transport))
    monkeypatch.setenv("SJC_API_KEY", "k")
    argv = ["submit", "a red cube", "--wait", "--out", str(tmp_path / "o"), "--server", BASE,
            "--steps", "50", "--guidance", "7.5", "--param", "video_frames=4", "--param", "sigma_schedule=annealed"]
    assert cli.main(argv) == code
    out, err = capsys.readouterr()
    if code == 0:
        assert (tmp_path / "o" / "mesh.glb").read_bytes() == b"glb!"
        assert f"{BASE}/v1/files/jobs/j1/mesh.glb" in out
    else:
        assert "worker_lost: gave up" in err and not (tmp_path / "o").exists()


def test_rate_limited_requests_wait_out_retry_after_then_succeed():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) <= 2:
            return httpx.Response(429, headers={"Retry-After": "0"}, json={
                "type": "urn:sjc:problem:rate-limited", "title": "Too many requests", "status": 429})
        return httpx.Response(200, json={"id": "j1", "status": "queued"})

    client = SJCClient(BASE, "k", transport=httpx.MockTransport(handler))
    assert client.get("j1")["status"] == "queued" and len(calls) == 3
    calls.clear()
    with pytest.raises(ApiError) as info:  # the active-jobs cap is not waited out
        SJCClient(BASE, "k", transport=httpx.MockTransport(lambda r: httpx.Response(429, headers={"Retry-After": "0"},
                  json={"type": "urn:sjc:problem:too-many-active-jobs", "title": "Too many", "status": 429}))).get("j1")
    assert info.value.status == 429
    stingy = SJCClient(BASE, "k", rate_limit_retries=0, transport=httpx.MockTransport(handler))
    calls.clear()
    with pytest.raises(ApiError):
        stingy.get("j1")
