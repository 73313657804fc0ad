"""Artifacts: presigned S3 links that fetch the bytes over HTTP; local-store links that are signed and expire."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import auth

FILES = {
    "field.pt": (b"\x80checkpoint" * 50, "application/octet-stream"),
    "turntable.mp4": (b"\x00\x00\x00\x18ftypmp42" * 20, "video/mp4"),
    "mesh.glb": (b"glTF\x02\x00\x00\x00" * 10, "model/gltf-binary"),
    "mesh.obj": (b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "model/obj"),
    "previews/step_000010.png": (b"\x89PNG\r\n\x1a\n" * 4, "image/png"),
    "manifest.json": (b'{"job_id": "x"}', "application/json"),
    "resume/state.pt": (b"internal", "application/octet-stream"),
}


def upload(services, job_id: str) -> None:
    for name, (data, ctype) in FILES.items():
        services.store.put_bytes(f"jobs/{job_id}/{name}", data, ctype)


def listed(client, job_id: str, owner: str = "alice") -> dict:
    r = client.get(f"/v1/jobs/{job_id}/artifacts", headers=auth(owner))
    assert r.status_code == 200, r.text
    return r.json()


def test_presigned_urls_fetch_the_bytes(client, services):
    job_id = client.post("/v1/jobs", json={"prompt": "a red cube"}, headers=auth()).json()["id"]
    assert listed(client, job_id) == {**listed(client, job_id), "artifacts": [], "complete": False}
    upload(services, job_id)
    body = listed(client, job_id)
    assert body["complete"] is True and body["expires_in_s"] == 60
    by_name = {a["name"]: a for a in body["artifacts"]}
    assert set(by_name) == set(FILES) - {"resume/state.pt"}
    assert by_name["field.pt"]["kind"] == "checkpoint" and by_name["mesh.glb"]["kind"] == "mesh"
    for name, art in by_name.items():
        data, ctype = FILES[name]
        assert art["size"] == len(data) and art["content_type"] == ctype and art["key"] == f"jobs/{job_id}/{name}"
        got = httpx.get(art["url"], timeout=10)
        assert got.status_code == 200 and got.content == data, name
        assert got.headers["content-type"] == ctype
        assert "X-Amz-Signature=" in art["url"] and "X-Amz-Expires=60" in art["url"]  # moto checks no signatures


@pytest.fixture
def local_client(api_settings, tmp_path):
    from api.main import create_app

    settings = api_settings.model_copy(update={"store": "local", "local_store_dir": str(tmp_path / "store")})
    with TestClient(create_app(settings)) as c:
        yield c


def test_local_store_links_are_signed_expire_and_stay_in_the_job_folder(local_client, tmp_path):
    client, services = local_client, local_client.app.state.services
    job_id = client.post("/v1/jobs", json={"prompt": "a red cube"}, headers=auth()).json()["id"]
    upload(services, job_id)
    (tmp_path / "store" / "secret.txt").write_text("not yours")
    arts = {a["name"]: a for a in listed(client, job_id)["artifacts"]}
    url = arts["mesh.obj"]["url"]
    assert url.startswith(services.settings.public_base_url + f"/v1/files/jobs/{job_id}/mesh.obj?")
    r = client.get(url)
    assert r.status_code == 200 and r.content == FILES["mesh.obj"][0] and r.headers["content-type"] == "model/obj"
    assert client.get(url.replace("mesh.obj", "mesh.glb")).status_code == 403  # the signature names one key
    assert client.get(url.replace("sig=", "sig=0").replace("&", "&x=") + "f").status_code in (403, 422)
    store = services.store
    old = f"/v1/files/jobs/{job_id}/mesh.obj?expires=1000&sig={store.sign(f'jobs/{job_id}/mesh.obj', 1000)}"
    r = client.get(old)
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    for key in ("secret.txt", f"jobs/{job_id}/../../secret.txt", f"jobs/{job_id}/%2e%2e/%2e%2e/secret.txt"):
        exp = 2**33
        try:
            sig = store.sign(key, exp)
        except ValueError:
            sig = "0" * 64
        r = client.get(f"/v1/files/{key}?expires={exp}&sig={sig}")
        assert r.status_code == 404 and "not yours" not in r.text, key
        if "%2e" in key or key == "secret.txt":  # reached the files route (httpx folds a literal '..' itself)
            assert r.json()["title"] == "File not found", key
    assert client.get(f"/v1/files/jobs/{job_id}/mesh.obj").status_code == 422  # no signature at all
