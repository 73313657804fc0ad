"""The web page at ``/``, driven in headless chromium against a real stack (redis-server, the API,
a Celery worker, moto's S3 server with bucket CORS enforced).

A prompt goes in through the form; the job waits in the queue (no worker yet), the page is reloaded
and reconnects to the job's events with Last-Event-ID, a worker starts, progress reaches done, the
mesh shows in the 3D viewer in the prompt's colour, and every download link returns its file. Every
request stays on the page's origin or the store's; the console stays free of errors.

Screenshots of each state go to ``$SJC_PAGE_SCREENSHOTS`` (default: the test's temporary folder);
``SJC_PAGE_SCREENSHOTS=docs`` refreshes the README's pictures.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.fixtures.page import PageStack, PageWatch, origin
from tests.fixtures.service import API_KEYS, ROOT, wait_until

pytestmark = pytest.mark.slow
KEY = API_KEYS["alice"]
# a short run that still carves a shape on 2 CPU cores: a 32^3 grid, an 8-frame video
# (SJC_PAGE_STEPS / SJC_PAGE_GRID make a longer run for the README's pictures)
RUN = {"steps": os.environ.get("SJC_PAGE_STEPS", "120"), "seed": "1", "grid_size": os.environ.get("SJC_PAGE_GRID", "32"),
       "video_frames": "8", "preview_every": "40", "target_faces": "3000"}
BACKGROUND = np.array([0xE9, 0xEC, 0xEF])  # the viewer's clear colour (web/src/viewer.ts)
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    where = os.environ.get("SJC_PAGE_SCREENSHOTS")
    path = (ROOT / where) if where else tmp_path_factory.mktemp("page-shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_in(watch: PageWatch, stack: PageStack, key: str = KEY) -> None:
    page = watch.page
    page.goto(stack.url + "/")
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")


def wait_logged_in(page) -> None:
    # arrow functions, not expression strings: Playwright evaluates a string with eval(), which the
    # page's Content-Security-Policy forbids (as it should)
    page.wait_for_function("() => document.querySelectorAll('#model option').length > 0", timeout=TIMEOUT_MS)
    page.wait_for_selector("#submit:not([disabled])", timeout=TIMEOUT_MS)


def wait_succeeded(page, timeout_ms: int = 300_000) -> None:
    """Wait for the open job to finish; fail at once, with the page's error text, if it did not succeed."""
    page.wait_for_function("() => ['succeeded', 'failed', 'canceled'].includes("
                           "document.querySelector('#job-status').textContent)", timeout=timeout_ms)
    status = page.locator("#job-status").text_content()
    assert status == "succeeded", f"job {status}: {page.locator('#job-error').text_content()}"


def object_colour(png: bytes) -> np.ndarray:
    """Mean RGB of the pixels that are not the viewer's background."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(float)
    fg = rgb[np.abs(rgb - BACKGROUND).sum(axis=1) > 40]
    assert len(fg) > 0.01 * len(rgb), f"the viewer shows almost nothing: {len(fg)} of {len(rgb)} pixels"
    return fg.mean(axis=0)


def test_page_is_served_with_a_strict_content_security_policy(page_stack: PageStack):
    r = httpx.get(page_stack.url + "/", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = dict(part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and csp["script-src"] == "'self'"
    assert csp["connect-src"].split() == ["'self'", "blob:", page_stack.store_origin]
    assert '<script type="module" src="/static/app.js">' in r.text
    js = httpx.get(page_stack.url + "/static/app.js", timeout=10)
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert js.content == (ROOT / "api" / "static" / "app.js").read_bytes()
    assert httpx.get(page_stack.url + "/static/../main.py", timeout=10).status_code == 404


def test_the_api_lets_the_page_origin_read_the_bucket(page_stack: PageStack):
    from sjc_service.store import S3Store, ensure_cors

    env = page_stack.env
    store = S3Store(env["SJC_S3_BUCKET"], endpoint_url=env["SJC_S3_ENDPOINT_URL"], access_key_id="testing",
                    secret_access_key="testing")
    page_origin = origin(page_stack.url)

    def rules() -> list[dict]:
        try:
            return store.client.get_bucket_cors(Bucket=store.bucket)["CORSRules"]
        except store.client.exceptions.ClientError:
            return []

    wait_until(lambda: rules(), 20, what="the bucket CORS rule the API sets at start-up")
    assert [r["AllowedOrigins"] for r in rules()] == [[page_origin]]
    assert ensure_cors(store, [page_origin]) is False and len(rules()) == 1  # idempotent
    store.put_bytes("jobs/cors-check/x.txt", b"hi", "text/plain")
    url = store.presign_get("jobs/cors-check/x.txt", 60)
    allowed = httpx.get(url, headers={"Origin": page_origin}, timeout=10)
    assert allowed.headers.get("access-control-allow-origin") == page_origin
    refused = httpx.get(url, headers={"Origin": "http://elsewhere.example"}, timeout=10)
    assert "access-control-allow-origin" not in refused.headers


def test_wrong_key_shows_a_clear_error(page_stack: PageStack, watch_page, shots: Path):
    watch = watch_page()
    page = watch.page
    log_in(watch, page_stack, "sk-not-a-real-key")
    status = page.locator("#key-status")
    status.filter(has_text="refused").wait_for(timeout=TIMEOUT_MS)
    assert "The API key was refused: The API key is not valid." in status.inner_text()
    assert page.locator("#submit").is_disabled()
    assert page.evaluate("document.activeElement.id") == "api-key"
    page.screenshot(path=str(shots / "page_bad_key.png"))
    assert all("401" in e for e in watch.console_errors), watch.console_errors


def test_refused_prompt_shows_its_message_inline(page_stack: PageStack, watch_page, shots: Path):
    watch = watch_page()
    page = watch.page
    log_in(watch, page_stack)
    wait_logged_in(page)
    assert page.locator("#model").input_value() == "embedded"
    colours = page.locator("#vocabulary [data-group='colors']").all_inner_texts()
    assert "red" in colours and "blue" in colours
    page.fill("#prompt", "a red banana")
    page.press("#prompt", "Enter")
    error = page.locator("#prompt-error")
    error.wait_for(state="visible", timeout=TIMEOUT_MS)
    assert "unknown words ['banana']" in error.inner_text()
    assert page.locator("#prompt").get_attribute("aria-invalid") == "true"
    page.screenshot(path=str(shots / "page_refused.png"))
    page.click("#vocabulary [data-word='sphere']")
    assert page.locator("#prompt").input_value() == "a red sphere"
    assert error.is_hidden()
    # every control has a label; keyboard focus is visible
    unlabeled = page.evaluate("() => [...document.querySelectorAll('input, select')].filter(e => e.labels.length === 0)"
                              ".map(e => e.id)")
    assert unlabeled == []
    page.focus("#prompt")
    page.keyboard.press("Tab")
    ring = page.evaluate("() => { const s = getComputedStyle(document.activeElement); "
                         "return [document.activeElement.dataset.word, s.outlineStyle, s.outlineWidth]; }")
    assert ring == ["red", "solid", "3px"], ring
    assert all("422" in e for e in watch.console_errors), watch.console_errors


def test_rate_limit_and_outage_read_clearly_and_a_retry_reuses_the_idempotency_key(page_stack: PageStack, watch_page):
    """The page's error display alone: the create call answers 429, then the network fails (both
    simulated by the browser; everything else is the real stack)."""
    watch = watch_page()
    page = watch.page
    log_in(watch, page_stack)
    wait_logged_in(page)
    keys: list[str] = []
    page.on("request", lambda req: keys.append(req.headers.get("idempotency-key", ""))
            if req.method == "POST" and req.url.endswith("/v1/jobs") else None)
    problem = {"type": "urn:sjc:problem:too-many-active-jobs", "title": "Too many active jobs", "status": 429,
               "detail": "This key already has 4 queued or running jobs; wait for one to finish or cancel one."}
    page.route("**/v1/jobs", lambda route: route.fulfill(
        status=429, headers={"Retry-After": "30"}, content_type="application/problem+json", body=json.dumps(problem)))
    page.fill("#prompt", "a red cube")
    page.press("#prompt", "Enter")
    error = page.locator("#form-error")
    error.filter(has_text="Rate limited").wait_for(timeout=TIMEOUT_MS)
    assert error.inner_text() == f"Rate limited: {problem['detail']} Try again in 30 s."
    page.unroute("**/v1/jobs")
    page.route("**/v1/jobs", lambda route: route.abort("connectionrefused"))
    page.press("#prompt", "Enter")
    error.filter(has_text="cannot be reached").wait_for(timeout=TIMEOUT_MS)
    assert error.inner_text().startswith("The service cannot be reached (network error).")
    assert len(keys) == 2 and len(keys[0]) == 32 and keys[0] == keys[1], keys
    assert page.locator("#job").is_hidden()


def test_prompt_to_asset_in_the_viewer(page_stack: PageStack, watch_page, shots: Path):
    watch = watch_page()
    page = watch.page
    events_requests: list[dict[str, str]] = []
    page.on("request", lambda req: events_requests.append(req.headers) if req.url.endswith("/events") else None)
    log_in(watch, page_stack)
    wait_logged_in(page)
    page.click("#vocabulary [data-word='red']")
    page.click("#vocabulary [data-word='sphere']")
    page.click("details.advanced summary")
    for name, value in RUN.items():
        page.fill(f"#{name}", value)
    page.press("#prompt", "Control+Enter")

    # 1. no worker yet: the job waits, first in the queue
    page.locator("#job-status").filter(has_text="queued").wait_for(timeout=TIMEOUT_MS)
    page.locator("#job-progress-text").filter(has_text="next in the queue").wait_for(timeout=TIMEOUT_MS)
    job_id = page.locator("#job-id").inner_text()
    page.screenshot(path=str(shots / "page_queued.png"))

    # 2. a reload reconnects to the open job's events from the last event seen
    # (the status can come from the create response before the stream's first event is read)
    page.wait_for_function("() => (JSON.parse(localStorage.getItem('sjc.openJob')) || {}).lastEventId",
                           timeout=TIMEOUT_MS)
    saved = page.evaluate("JSON.parse(localStorage.getItem('sjc.openJob'))")
    assert saved["id"] == job_id and saved["lastEventId"]
    page.reload()
    page.locator("#job-id").filter(has_text=job_id).wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function("() => document.querySelector('#job-status').textContent === 'queued'",
                           timeout=TIMEOUT_MS)
    assert any(h.get("last-event-id") == saved["lastEventId"] for h in events_requests), events_requests

    # 3. a worker takes the job; the stream carries it to the end
    page_stack.start_worker()
    running = page.locator("#job-progress-text").filter(has_text="left")
    running.or_(page.locator("#job-status").filter(has_text="succeeded")).wait_for(timeout=300_000)
    if running.is_visible():  # a short run may finish between two looks: the picture is a bonus
        page.screenshot(path=str(shots / "page_running.png"))
    wait_succeeded(page)
    assert page.locator("#job-progress").evaluate("el => el.value") == 100
    params = httpx.get(f"{page_stack.url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {KEY}"},
                       timeout=10).json()["params"]
    assert (params["prompt"], params["steps"], params["seed"], params["target_faces"]) == (
        "a red sphere", int(RUN["steps"]), 1, 3000)
    page.wait_for_selector("#viewer[data-state='loaded']", timeout=60_000)
    page.wait_for_timeout(300)  # one animation frame for the on-demand render
    colour = object_colour(page.locator("#viewer canvas").screenshot())
    assert colour[0] > 1.4 * colour[1] and colour[0] > 1.4 * colour[2], f"not red: mean RGB {colour}"
    page.screenshot(path=str(shots / "page_done.png"), full_page=True)

    # 4. previews and the video come from the store; every download link returns its file
    assert page.locator("#previews img").count() >= 1
    assert page.evaluate("[...document.querySelectorAll('#previews img')].every(i => i.naturalWidth > 0)")
    assert origin(page.locator("#video").get_attribute("src")) == page_stack.store_origin
    page.wait_for_function("() => document.querySelector('#video').readyState >= 2", timeout=TIMEOUT_MS)
    assert page.evaluate("document.querySelector('#video').duration") > 0
    links = page.evaluate("[...document.querySelectorAll('#downloads a')].map(a => [a.dataset.name, a.href, "
                          "a.nextElementSibling.textContent])")
    names = {name for name, _, _ in links}
    assert {"mesh.glb", "turntable.mp4", "manifest.json"} <= names, names
    for name, href, size_text in links:
        r = httpx.get(href, timeout=30)
        assert r.status_code == 200, (name, r.status_code)
        assert size_text.strip(), name
        if name == "mesh.glb":
            assert r.content[:4] == b"glTF"

    # 5. the job list shows the job, newest first, with its badge; it opens from there at phone width
    first = page.locator("#job-list .job-item").first
    assert first.get_attribute("data-job-id") == job_id
    assert first.locator(".badge").inner_text().lower() == "succeeded"
    phone = watch_page(390, 844)
    log_in(phone, page_stack)
    phone.page.locator(f"#job-list [data-job-id='{job_id}']").click(timeout=TIMEOUT_MS)
    phone.page.wait_for_selector("#viewer[data-state='loaded']", timeout=60_000)
    phone.page.wait_for_timeout(300)
    assert phone.page.evaluate("document.documentElement.scrollWidth") <= 390
    phone.page.screenshot(path=str(shots / "page_phone.png"))

    allowed = {origin(page_stack.url), page_stack.store_origin}
    for w in (watch, phone):
        assert w.origins() <= allowed, w.origins() - allowed
        assert w.console_errors == [], w.console_errors


def start_long_job(watch: PageWatch, stack: PageStack, prompt: str) -> str:
    """Log in, submit ``prompt`` with 5,000 steps, wait until it is queued or running; returns its id."""
    page = watch.page
    log_in(watch, stack)
    wait_logged_in(page)
    page.fill("#prompt", prompt)
    page.fill("#steps", "5000")
    page.press("#prompt", "Enter")
    page.locator("#job-status").filter(has_text="queued").or_(
        page.locator("#job-status").filter(has_text="running")).wait_for(timeout=TIMEOUT_MS)
    return page.locator("#job-id").inner_text()


def test_cancel_a_job(page_stack: PageStack, watch_page):
    watch = watch_page()
    page = watch.page
    start_long_job(watch, page_stack, "a blue cube")
    page.click("#cancel")
    page.locator("#job-status").filter(has_text="canceled").wait_for(timeout=60_000)
    assert page.locator("#cancel").is_hidden()
    page.click("#refresh-jobs")
    page.locator("#job-list .job-item").first.locator(".badge").filter(has_text="canceled").wait_for(timeout=TIMEOUT_MS)
    assert watch.console_errors == [], watch.console_errors


def test_delete_a_job_after_confirming(page_stack: PageStack, watch_page):
    watch = watch_page()
    page = watch.page
    job_id = start_long_job(watch, page_stack, "a green cone")
    page.locator(f"#job-list [data-job-id='{job_id}']").wait_for(timeout=TIMEOUT_MS)
    headers = {"Authorization": f"Bearer {KEY}"}

    page.once("dialog", lambda d: d.dismiss())  # "no": nothing happens
    page.click("#delete-job")
    assert httpx.get(f"{page_stack.url}/v1/jobs/{job_id}", headers=headers, timeout=30).status_code == 200
    assert page.locator("#job").is_visible()

    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.request.method} {r.url} {r.status}") if r.status >= 400 else None)
    messages: list[str] = []
    page.once("dialog", lambda d: (messages.append(d.message), d.accept()))
    page.click("#delete-job")
    page.locator("#job").wait_for(state="hidden", timeout=TIMEOUT_MS)
    assert job_id in messages[0] and failed == [], (messages, failed)
    page.locator(f"#job-list [data-job-id='{job_id}']").wait_for(state="detached", timeout=TIMEOUT_MS)
    assert page.evaluate("localStorage.getItem('sjc.openJob')") is None
    # a queued job is gone at once; a running one is canceled, and the sweep deletes it once it has stopped

    def canceled_or_gone() -> bool:
        r = httpx.get(f"{page_stack.url}/v1/jobs/{job_id}", headers=headers, timeout=30)
        return r.status_code == 404 or (r.status_code == 200 and r.json()["status"] == "canceled")

    wait_until(canceled_or_gone, 60, interval=0.5, what="the deleted job to be canceled or gone")
    page.click("#refresh-jobs")  # a later listing still leaves it out
    page.wait_for_timeout(500)
    assert page.locator(f"#job-list [data-job-id='{job_id}']").count() == 0
    assert watch.console_errors == [], (watch.console_errors, failed)


def test_local_store_links_stay_on_the_page_origin(local_page_stack: PageStack, watch_page, shots: Path):
    stack = local_page_stack
    watch = watch_page()
    page = watch.page
    log_in(watch, stack)
    wait_logged_in(page)
    page.fill("#prompt", "a blue sphere")
    page.click("details.advanced summary")
    for name, value in {**RUN, "steps": "100", "grid_size": "32", "preview_every": "50"}.items():
        page.fill(f"#{name}", value)
    page.press("#prompt", "Enter")
    wait_succeeded(page)
    page.wait_for_selector("#viewer[data-state='loaded']", timeout=60_000)
    page.wait_for_timeout(300)
    colour = object_colour(page.locator("#viewer canvas").screenshot())
    assert colour[2] > 1.4 * colour[0] and colour[2] > 1.2 * colour[1], f"not blue: mean RGB {colour}"
    hrefs = page.evaluate("[...document.querySelectorAll('#downloads a')].map(a => a.href)")
    assert hrefs and all(h.startswith(stack.url + "/v1/files/jobs/") for h in hrefs), hrefs
    glb = next(h for h in hrefs if "/mesh.glb?" in h)
    assert httpx.get(glb, timeout=30).content[:4] == b"glTF"
    page.screenshot(path=str(shots / "page_local_store.png"), full_page=True)
    assert watch.origins() == {origin(stack.url)}, watch.origins()
    assert watch.console_errors == [], watch.console_errors


def test_job_list_pages_newest_first_and_opens_a_job(page_stack: PageStack, watch_page):
    bob = {"Authorization": f"Bearer {API_KEYS['bob']}"}
    made = []
    for i in range(12):  # more than a page (10); each canceled at once, so the key's cap is never reached
        r = httpx.post(page_stack.url + "/v1/jobs", json={"prompt": "a green cone", "seed": i, "steps": 5000},
                       headers=bob, timeout=30)
        assert r.status_code == 202, r.text
        made.append(r.json()["id"])
        assert httpx.post(f"{page_stack.url}/v1/jobs/{made[-1]}/cancel", headers=bob, timeout=30).status_code == 202

    def all_canceled() -> bool:  # a job the worker had started stops at its next cancel check
        page_ = httpx.get(page_stack.url + "/v1/jobs?limit=20", headers=bob, timeout=30).json()["items"]
        return len(page_) == 12 and all(j["status"] == "canceled" for j in page_)

    wait_until(all_canceled, 60, interval=0.3, what="bob's jobs to be canceled")
    watch = watch_page()
    page = watch.page
    log_in(watch, page_stack, API_KEYS["bob"])
    items = page.locator("#job-list .job-item")
    items.nth(9).wait_for(timeout=TIMEOUT_MS)
    assert items.count() == 10
    page.click("#more-jobs")
    items.nth(11).wait_for(timeout=TIMEOUT_MS)
    assert page.locator("#more-jobs").is_hidden()
    shown = [items.nth(i).get_attribute("data-job-id") for i in range(items.count())]
    assert shown == made[::-1]
    assert set(page.locator("#job-list .badge").all_text_contents()) == {"canceled"}
    items.nth(11).click()
    page.locator("#job-id").filter(has_text=made[0]).wait_for(timeout=TIMEOUT_MS)
    page.locator("#job-status").filter(has_text="canceled").wait_for(timeout=TIMEOUT_MS)
    assert watch.console_errors == [], watch.console_errors
