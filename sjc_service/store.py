"""Where artifacts live: an S3-compatible bucket (MinIO, AWS, moto's server) or a local folder.

Both stores take the same keys (``jobs/{id}/mesh.glb``) and set each object's content type
explicitly (``mimetypes`` gets ``.glb``/``.obj``/``.ply`` wrong). Links handed to clients are
presigned S3 URLs on the public endpoint, or for the local store ``{public_base_url}/v1/files/{key}``
with an expiry and an HMAC signature that the API checks with :meth:`LocalStore.verify`.

An S3 call that fails for any reason but "no such object" is retried by botocore (``retry_mode``,
``max_attempts``: exponential backoff with jitter on throttling, 5xx and connection errors), then raised
as :class:`StoreUnavailable`, whose message names the operation only: the endpoint URL and the
object key stay in the log.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol
from urllib.parse import quote, urlencode

from sjc_service.settings import Settings

CONTENT_TYPES: dict[str, str] = {
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".obj": "model/obj",
    ".mtl": "model/mtl",
    ".ply": "application/octet-stream",
    ".stl": "model/stl",
    ".mp4": "video/mp4",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".json": "application/json",
    ".pt": "application/octet-stream",
    ".txt": "text/plain; charset=utf-8",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"
log = logging.getLogger(__name__)


class StoreUnavailable(RuntimeError):
    """The object store did not answer (after botocore's retries): a transient outage, as far as we know.

    Its message is safe to show to clients: it names the operation, never the endpoint or the key.
    """

    def __init__(self, operation: str) -> None:
        super().__init__(f"the object store is unavailable ({operation} failed); try again later")
        self.operation = operation


@contextmanager
def _store_call(operation: str, key: str = "") -> Iterator[None]:
    """Turn botocore/boto3 errors into :class:`StoreUnavailable`, logging the details."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError, Boto3Error) as exc:
        log.warning("object store %s %s failed: %r", operation, key, exc)
        raise StoreUnavailable(operation) from exc


def content_type_for(name: str) -> str:
    """The content type the service stores a file under, from its extension."""
    return CONTENT_TYPES.get(PurePosixPath(name).suffix.lower(), DEFAULT_CONTENT_TYPE)


def check_key(key: str) -> str:
    """Return ``key`` if it is a clean relative object key; raise ``ValueError`` otherwise.

    Rejects absolute keys, ``..`` and ``.`` segments, empty segments, backslashes and NUL, so a
    key can never name a file outside the store's folder.
    """
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid object key {key!r}")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    content_type: str


class ObjectStore(Protocol):
    """What the API and the worker need of an artifact store."""

    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> ObjectInfo: ...
    def put_bytes(self, key: str, data: bytes, content_type: str) -> ObjectInfo: ...
    def get_file(self, key: str, path: str | Path) -> bool: ...
    def get_bytes(self, key: str) -> bytes | None: ...
    def head(self, key: str) -> ObjectInfo | None: ...
    def list(self, prefix: str) -> list[ObjectInfo]: ...
    def delete_prefix(self, prefix: str) -> int: ...
    def presign_get(self, key: str, expires_s: int) -> str: ...
    def ping(self) -> None: ...
    def ensure_bucket(self) -> None: ...


class S3Store:
    """Objects in an S3 bucket through boto3.

    Args:
        bucket: bucket name.
        endpoint_url: the endpoint this process talks to (``None``: AWS).
        public_url: the endpoint written into presigned URLs (``None``: ``endpoint_url``); a
            presigned URL is signed for its host, so it is made by a second client on that host.
        region, access_key_id, secret_access_key: as for boto3 (``None``: its usual lookup).
        retry_mode: botocore's retry mode, ``"standard"`` or ``"adaptive"`` (client-side rate limiting too).
        max_attempts: attempts per call, the first included (default 6: about 30 s of backoff at most).
        connect_timeout_s, read_timeout_s: socket timeouts of one attempt.
    """

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        public_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        retry_mode: str = "standard",
        max_attempts: int = 6,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        config = Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"max_attempts": max_attempts, "mode": retry_mode},
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key, region_name=region
        )
        self.client = session.client("s3", endpoint_url=endpoint_url, config=config)
        if public_url and public_url != endpoint_url:
            self.public_client = session.client("s3", endpoint_url=public_url, config=config)
        else:
            self.public_client = self.client

    @classmethod
    def from_settings(cls, settings: Settings) -> "S3Store":
        secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
        return cls(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            public_url=settings.s3_public_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=secret,
            retry_mode=settings.s3_retry_mode,
            max_attempts=settings.s3_max_attempts,
        )

    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> ObjectInfo:
        ctype = content_type or content_type_for(key)
        with _store_call("upload", key):
            self.client.upload_file(str(path), self.bucket, check_key(key), ExtraArgs={"ContentType": ctype})
        return ObjectInfo(key, Path(path).stat().st_size, ctype)

    def put_bytes(self, key: str, data: bytes, content_type: str) -> ObjectInfo:
        with _store_call("upload", key):
            self.client.put_object(Bucket=self.bucket, Key=check_key(key), Body=data, ContentType=content_type)
        return ObjectInfo(key, len(data), content_type)

    def get_file(self, key: str, path: str | Path) -> bool:
        """Download ``key`` to ``path``; ``False`` if there is no such object."""
        from botocore.exceptions import ClientError

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{path}.part")
        with _store_call("download", key):
            try:
                self.client.download_file(self.bucket, check_key(key), str(tmp))
            except ClientError as exc:
                if _is_not_found(exc):
                    return False
                raise
        os.replace(tmp, path)
        return True

    def get_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        with _store_call("download", key):
            try:
                return self.client.get_object(Bucket=self.bucket, Key=check_key(key))["Body"].read()
            except ClientError as exc:
                if _is_not_found(exc):
                    return None
                raise

    def head(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        with _store_call("head", key):
            try:
                r = self.client.head_object(Bucket=self.bucket, Key=check_key(key))
            except ClientError as exc:
                if _is_not_found(exc):
                    return None
                raise
        return ObjectInfo(key, int(r["ContentLength"]), r.get("ContentType", DEFAULT_CONTENT_TYPE))

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Objects under ``prefix`` (sizes from the listing; content types from the extension)."""
        out: list[ObjectInfo] = []
        with _store_call("list", prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    out.append(ObjectInfo(obj["Key"], int(obj["Size"]), content_type_for(obj["Key"])))
        return out

    def delete_prefix(self, prefix: str) -> int:
        keys = [o.key for o in self.list(prefix)]
        for i in range(0, len(keys), 1000):
            chunk = [{"Key": k} for k in keys[i : i + 1000]]
            with _store_call("delete", prefix):
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
        return len(keys)

    def presign_get(self, key: str, expires_s: int) -> str:
        """A GET link on the public endpoint. It asks the store to answer with ``Content-Disposition:
        attachment`` and the file's name, so a link opened from another origin (the web page) saves the file
        under its name (a cross-origin ``<a download>`` is ignored); images, video and fetches ignore it."""
        name = PurePosixPath(check_key(key)).name.replace('"', "")
        params = {"Bucket": self.bucket, "Key": key, "ResponseContentDisposition": f'attachment; filename="{name}"'}
        return self.public_client.generate_presigned_url("get_object", Params=params, ExpiresIn=int(expires_s))

    def ping(self) -> None:
        """Raise if the bucket cannot be reached."""
        self.client.head_bucket(Bucket=self.bucket)

    def ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if not _is_not_found(exc):
                raise
            self.client.create_bucket(Bucket=self.bucket)


def _is_not_found(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound")


class LocalStore:
    """Objects as files under ``root``; content types kept in a ``.meta`` side file.

    Args:
        root: the folder.
        secret: HMAC key of download links.
        base_url: the API's public base URL; links are ``{base_url}/v1/files/{key}?expires=..&sig=..``.
    """

    META_SUFFIX = ".sjcmeta"

    def __init__(self, root: str | Path, secret: str, base_url: str = "http://127.0.0.1:8000") -> None:
        if not secret:
            raise ValueError("LocalStore needs a non-empty signing secret")
        self.root = Path(root).resolve()
        self.secret = secret.encode()
        self.base_url = base_url.rstrip("/")

    @classmethod
    def from_settings(cls, settings: Settings) -> "LocalStore":
        return cls(settings.local_store_dir, settings.signing_secret.get_secret_value(), settings.public_base_url)

    def path_for(self, key: str) -> Path:
        """The file of ``key``; raises ``ValueError`` for keys that would leave the folder."""
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"object key {key!r} escapes the store folder")
        if path.name.endswith(self.META_SUFFIX):
            raise ValueError(f"object key {key!r} names a metadata file")
        return path

    def _write_meta(self, path: Path, content_type: str) -> None:
        Path(str(path) + self.META_SUFFIX).write_text(content_type)

    def content_type(self, key: str) -> str:
        meta = Path(str(self.path_for(key)) + self.META_SUFFIX)
        return meta.read_text() if meta.is_file() else content_type_for(key)

    def put_file(self, key: str, path: str | Path, content_type: str | None = None) -> ObjectInfo:
        dst = self.path_for(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dst)
        ctype = content_type or content_type_for(key)
        self._write_meta(dst, ctype)
        return ObjectInfo(key, dst.stat().st_size, ctype)

    def put_bytes(self, key: str, data: bytes, content_type: str) -> ObjectInfo:
        dst = self.path_for(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, dst)
        self._write_meta(dst, content_type)
        return ObjectInfo(key, len(data), content_type)

    def get_file(self, key: str, path: str | Path) -> bool:
        src = self.path_for(key)
        if not src.is_file():
            return False
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, path)
        return True

    def get_bytes(self, key: str) -> bytes | None:
        src = self.path_for(key)
        return src.read_bytes() if src.is_file() else None

    def head(self, key: str) -> ObjectInfo | None:
        src = self.path_for(key)
        if not src.is_file():
            return None
        return ObjectInfo(key, src.stat().st_size, self.content_type(key))

    def list(self, prefix: str) -> list[ObjectInfo]:
        if not self.root.is_dir():
            return []
        out: list[ObjectInfo] = []
        for path in sorted(self.root.rglob("*")):
            if not path.is_file() or path.name.endswith((self.META_SUFFIX, ".part")):
                continue
            key = path.relative_to(self.root).as_posix()
            if key.startswith(prefix):
                out.append(ObjectInfo(key, path.stat().st_size, self.content_type(key)))
        return out

    def delete_prefix(self, prefix: str) -> int:
        items = self.list(prefix)
        for obj in items:
            path = self.path_for(obj.key)
            path.unlink(missing_ok=True)
            Path(str(path) + self.META_SUFFIX).unlink(missing_ok=True)
        return len(items)

    def sign(self, key: str, expires: int) -> str:
        msg = f"{check_key(key)}\n{int(expires)}".encode()
        return hmac.new(self.secret, msg, hashlib.sha256).hexdigest()

    def verify(self, key: str, expires: int | str, sig: str, now: float | None = None) -> bool:
        """Whether ``sig`` is this store's signature of ``key`` until ``expires`` and it has not expired."""
        try:
            exp = int(expires)
            expected = self.sign(key, exp)
        except ValueError:
            return False
        if exp < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(expected, str(sig))

    def presign_get(self, key: str, expires_s: int) -> str:
        expires = int(time.time()) + int(expires_s)
        query = urlencode({"expires": expires, "sig": self.sign(key, expires)})
        return f"{self.base_url}/v1/files/{quote(key)}?{query}"

    def ping(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise OSError(f"local store folder {self.root} is not writable")

    def ensure_bucket(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)


def make_store(settings: Settings) -> ObjectStore:
    """The store the settings name (``SJC_STORE``)."""
    if settings.store == "s3":
        return S3Store.from_settings(settings)
    return LocalStore.from_settings(settings)


def ensure_cors(store: ObjectStore, origins: list[str]) -> bool:
    """Let web pages at ``origins`` fetch the store's presigned links (a bucket CORS rule for GET/HEAD).

    The web page's 3D viewer fetches the mesh from its presigned URL, which is on the bucket's origin.
    Existing rules are kept; a rule is added only when none already allows each origin. Returns
    ``True`` when a rule was written. The local store needs none (its links are on the API's origin).
    Raises botocore's ``ClientError`` where the server refuses bucket CORS (MinIO: it answers every
    origin by default).
    """
    if not isinstance(store, S3Store):
        return False
    from botocore.exceptions import ClientError

    try:
        rules = store.client.get_bucket_cors(Bucket=store.bucket).get("CORSRules", [])
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) != "NoSuchCORSConfiguration":
            raise
        rules = []
    missing = [o for o in origins if not any(o in r.get("AllowedOrigins", []) and "GET" in r.get("AllowedMethods", [])
                                             for r in rules)]
    if not missing:
        return False
    rule = {"AllowedOrigins": missing, "AllowedMethods": ["GET", "HEAD"], "AllowedHeaders": ["*"],
            "ExposeHeaders": ["Content-Length", "Content-Type", "ETag"], "MaxAgeSeconds": 3600}
    store.client.put_bucket_cors(Bucket=store.bucket, CORSConfiguration={"CORSRules": [*rules, rule]})
    return True
