"""Object stores: S3Store against moto's server over HTTP, LocalStore on a folder."""

from __future__ import annotations

import httpx
import pytest

from sjc_service.settings import Settings
from sjc_service.store import LocalStore, S3Store, check_key, content_type_for, make_store

EXPECTED_TYPES = {
    "mesh.glb": "model/gltf-binary",
    "mesh.obj": "model/obj",
    "material.mtl": "model/mtl",
    "mesh.ply": "application/octet-stream",
    "turntable.mp4": "video/mp4",
    "previews/step_000010.png": "image/png",
    "manifest.json": "application/json",
    "resume/state.pt": "application/octet-stream",
    "field.pt": "application/octet-stream",
}


def test_content_types():
    for name, ctype in EXPECTED_TYPES.items():
        assert content_type_for(f"jobs/x/{name}") == ctype
    assert content_type_for("jobs/x/MESH.GLB") == "model/gltf-binary"


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "../x", "a//b", "./a", "a/.", "a\\b", "a\x00b"])
def test_bad_keys_rejected(key):
    with pytest.raises(ValueError):
        check_key(key)


def test_s3_roundtrip_types_and_presigned_get(s3_store, tmp_path):
    payload = {name: f"payload of {name}".encode() * 50 for name in EXPECTED_TYPES}
    for name, data in payload.items():
        src = tmp_path / name.replace("/", "_")
        src.write_bytes(data)
        info = s3_store.put_file(f"jobs/j1/{name}", src)
        assert info.content_type == EXPECTED_TYPES[name] and info.size == len(data)
    for name, data in payload.items():
        head = s3_store.head(f"jobs/j1/{name}")
        assert head is not None and head.size == len(data) and head.content_type == EXPECTED_TYPES[name]
        dst = tmp_path / "down" / name
        assert s3_store.get_file(f"jobs/j1/{name}", dst) and dst.read_bytes() == data
        url = s3_store.presign_get(f"jobs/j1/{name}", 60)
        r = httpx.get(url, timeout=10)
        assert r.status_code == 200 and r.content == data
        assert r.headers["content-type"] == EXPECTED_TYPES[name]
        assert r.headers["content-disposition"] == f'attachment; filename="{name.split("/")[-1]}"'
    listed = {o.key: o.size for o in s3_store.list("jobs/j1/")}
    assert listed == {f"jobs/j1/{n}": len(d) for n, d in payload.items()}
    assert s3_store.head("jobs/j1/missing.glb") is None
    assert not s3_store.get_file("jobs/j1/missing.glb", tmp_path / "m")
    assert s3_store.get_bytes("jobs/j1/missing.glb") is None
    s3_store.put_bytes("jobs/j1/manifest.json", b"{}", "application/json")
    assert s3_store.get_bytes("jobs/j1/manifest.json") == b"{}"
    assert s3_store.delete_prefix("jobs/j1/") == len(payload)
    assert s3_store.list("jobs/j1/") == []
    s3_store.ping()


def test_s3_presign_uses_public_endpoint(moto_server, s3_bucket):
    public = moto_server.replace("127.0.0.1", "localhost")
    store = S3Store(s3_bucket, endpoint_url=moto_server, public_url=public,
                    access_key_id="testing", secret_access_key="testing")
    store.put_bytes("jobs/j2/a.png", b"\x89PNG...", "image/png")
    url = store.presign_get("jobs/j2/a.png", 60)
    assert url.startswith(public + f"/{s3_bucket}/jobs/j2/a.png?")  # path-style on the public host
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200 and r.content == b"\x89PNG..."


def test_s3_presign_carries_expiry(s3_store):
    """moto serves expired links anyway, so check what S3 itself enforces: the signed expiry."""
    s3_store.put_bytes("jobs/j3/a.json", b"{}", "application/json")
    q = httpx.URL(s3_store.presign_get("jobs/j3/a.json", 123)).params
    assert q["X-Amz-Expires"] == "123" and q["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert q["X-Amz-SignedHeaders"] == "host" and len(q["X-Amz-Signature"]) == 64


def test_s3_ping_fails_for_missing_bucket(moto_server):
    store = S3Store("no-such-bucket-xyz", endpoint_url=moto_server, access_key_id="testing", secret_access_key="testing")
    with pytest.raises(Exception):
        store.ping()


def test_make_store_from_settings(moto_server, s3_bucket, tmp_path):
    s3 = make_store(Settings(store="s3", s3_endpoint_url=moto_server, s3_bucket=s3_bucket,
                             s3_access_key_id="testing", s3_secret_access_key="testing"))
    assert isinstance(s3, S3Store)
    s3.ping()
    local = make_store(Settings(store="local", local_store_dir=str(tmp_path / "st")))
    assert isinstance(local, LocalStore)


def test_local_store_roundtrip_and_links(tmp_path):
    store = LocalStore(tmp_path / "store", secret="s3cret", base_url="http://api.test/")
    src = tmp_path / "m.glb"
    src.write_bytes(b"glTF" + b"\0" * 20)
    info = store.put_file("jobs/j1/mesh.glb", src)
    assert info.content_type == "model/gltf-binary" and info.size == 24
    store.put_bytes("jobs/j1/x.bin", b"abc", "application/x-custom")
    assert store.head("jobs/j1/x.bin").content_type == "application/x-custom"
    assert [o.key for o in store.list("jobs/j1/")] == ["jobs/j1/mesh.glb", "jobs/j1/x.bin"]
    assert store.get_file("jobs/j1/mesh.glb", tmp_path / "out.glb")
    assert (tmp_path / "out.glb").read_bytes() == src.read_bytes()

    url = store.presign_get("jobs/j1/mesh.glb", 60)
    assert url.startswith("http://api.test/v1/files/jobs/j1/mesh.glb?expires=")
    q = httpx.URL(url).params
    assert store.verify("jobs/j1/mesh.glb", q["expires"], q["sig"])
    assert not store.verify("jobs/j1/x.bin", q["expires"], q["sig"])  # signature is per key
    assert not store.verify("jobs/j1/mesh.glb", int(q["expires"]) + 1, q["sig"])  # expiry is signed
    assert not store.verify("jobs/j1/mesh.glb", q["expires"], q["sig"], now=int(q["expires"]) + 1)  # expired
    assert not store.verify("jobs/j1/mesh.glb", "soon", q["sig"])
    assert not store.verify("../etc/passwd", q["expires"], q["sig"])
    other = LocalStore(tmp_path / "store", secret="other")
    assert not other.verify("jobs/j1/mesh.glb", q["expires"], q["sig"])

    assert store.delete_prefix("jobs/j1/") == 2 and store.list("") == []


@pytest.mark.parametrize("key", ["../outside.txt", "jobs/../../outside.txt", "/etc/passwd", "a/./b"])
def test_local_store_rejects_traversal(tmp_path, key):
    store = LocalStore(tmp_path / "store", secret="s")
    with pytest.raises(ValueError):
        store.put_bytes(key, b"x", "text/plain")
    with pytest.raises(ValueError):
        store.path_for(key)
    assert not (tmp_path / "outside.txt").exists()


def test_local_store_rejects_symlink_escape(tmp_path):
    root = tmp_path / "store"
    (root / "jobs").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key.txt").write_text("x")
    (root / "jobs" / "link").symlink_to(tmp_path / "secret")
    store = LocalStore(root, secret="s")
    with pytest.raises(ValueError):
        store.path_for("jobs/link/key.txt")
