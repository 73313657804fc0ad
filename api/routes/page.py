"""The web page: ``GET /`` (index.html) and its bundled files under ``/static/``.

The files are built from ``web/src`` by ``node web/build.mjs`` into ``api/static/`` and ship in the
Python package, so serving the page needs no Node.js. Every response carries a Content-Security-Policy
that lets the page talk only to its own origin and to the object store's origin (where presigned
artifact links point: S3/MinIO, or the API itself for the local store); nothing else loads.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse

from api.deps import ServicesDep
from api.problems import Problem
from api.services import Services
from sjc_service.store import ObjectStore, ensure_cors

router = APIRouter(tags=["page"], include_in_schema=False)
STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
FILES = {  # the only files served: name -> media type
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
PROBE_KEY = "jobs/csp-probe/file"
CORS_ATTEMPTS, CORS_RETRY_S = 3, 2.0  # the bucket may still be being created at start-up
log = logging.getLogger("sjc.api")


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of ``url``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@lru_cache(maxsize=8)
def store_origin(store: ObjectStore) -> str:
    """The origin (``scheme://host[:port]``) of the store's download links, from a presigned probe
    link (presigning is local: no request is sent)."""
    return origin_of(store.presign_get(PROBE_KEY, 60))


def allow_page_origin(services: Services, *, background: bool = True) -> None:
    """At start-up: let the page's origin (``public_base_url``) fetch the bucket's presigned links.

    Runs in a daemon thread by default, so a slow or absent store never delays start-up. Never
    fatal: the API serves without it, but the page's 3D viewer cannot load meshes from a bucket that
    refuses its origin, so a failure is logged as a warning.
    """
    if background:
        threading.Thread(target=allow_page_origin, args=(services,), kwargs={"background": False},
                         name="bucket-cors", daemon=True).start()
        return
    origin = origin_of(services.settings.public_base_url)
    for attempt in range(1, CORS_ATTEMPTS + 1):
        try:
            if ensure_cors(services.store, [origin]):
                log.info("bucket CORS: added a GET rule for the page's origin %s", origin)
            return
        except Exception as exc:  # noqa: BLE001 - store down, bucket not made yet, or CORS unsupported (MinIO)
            if attempt == CORS_ATTEMPTS:
                log.warning("could not set the bucket's CORS rule for %s (%s); the page's viewer needs the "
                            "store to answer that origin (MinIO answers every origin by default)", origin, exc)
            else:
                time.sleep(CORS_RETRY_S)


def content_security_policy(store_origin: str) -> str:
    """Same origin for everything; the store's origin only for what artifact links load: the mesh
    (fetched by the viewer), previews and thumbnail (images) and the turntable video. ``blob:``
    serves the textures the glTF loader unpacks from a GLB; ``data:`` only the empty favicon."""
    store = f" {store_origin}" if store_origin else ""
    return "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        f"img-src 'self' data: blob:{store}",
        f"media-src 'self' blob:{store}",
        f"connect-src 'self' blob:{store}",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ])


def _file(name: str, services: ServicesDep) -> FileResponse:
    path = STATIC_DIR / name
    if not path.is_file():
        raise Problem(503, f"The web page is not built ({path} is missing): run `node web/build.mjs`.",
                      slug="page-not-built", title="Web page not built")
    headers = {
        "Content-Security-Policy": content_security_policy(store_origin(services.store)),
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
    return FileResponse(path, media_type=FILES[name], headers=headers)


@router.get("/", response_class=FileResponse)
def index(services: ServicesDep) -> FileResponse:
    """The page."""
    return _file("index.html", services)


@router.get("/static/{name}", response_class=FileResponse)
def static_file(name: str, request: Request, services: ServicesDep) -> FileResponse:
    """One of the page's bundled files (a fixed list: no other path is served)."""
    if name not in FILES:
        raise Problem(404, f"No resource at {request.url.path}")
    return _file(name, services)
