"""Model stores: immutable versions and a champion alias with history, on a directory or S3.

Layout, the same under a directory and under ``s3://bucket/prefix``::

    <name>/versions/<version>/model.pmml | model.pkl | manifest.json
    <name>/aliases.json

Versions are numbered 1, 2, 3... A publisher first claims its number with a create-only write,
then writes the artifacts, then the manifest last: a version exists for readers only once its
manifest does, so no reader ever sees half a version. aliases.json is updated by compare-and-swap
(a file lock locally, a conditional put on S3), so concurrent promotes can't lose each other.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from ._bundle import MANIFEST_FILE, Bundle, sha256_hex
from ._config import file_mode
from ._errors import ModelNotFoundError, StoreError, UsageError
from ._manifest import Manifest

DEFAULT_STORE = "pmml"
CHAMPION = "champion"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_NAME_LENGTH = 200
_CLAIM = ".claim"
_ALIASES = "aliases.json"


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_name(name: str, what: str = "model name") -> str:
    if len(name) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(name):
        raise UsageError(
            f"{what} {name[:40]!r}{'...' if len(name) > 40 else ''} is not valid: use up to "
            f"{MAX_NAME_LENGTH} letters, digits, '_', '.' and '-', starting with a letter or digit"
        )
    return name


class Blobs(Protocol):
    """The storage seam: keys are '/'-separated paths relative to the store's root."""

    url: str

    def get(self, key: str, *, unless_tag: str | None = None) -> tuple[bytes, str] | None:
        """The bytes under ``key`` and a tag for compare-and-swap, or None if absent. With
        ``unless_tag``, when the tag still equals it the bytes may be left out, (b"", tag):
        on S3 a conditional GET that transfers nothing."""

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_tag: str | None = None
    ) -> bool:
        """Write ``data``; False when the condition (absent, or current tag) does not hold."""

    def children(self, prefix: str) -> list[str]:
        """Names directly under ``prefix`` (a key ending in '/')."""


class LocalBlobs:
    """A directory. Writes go to a temporary file, then an atomic rename (or link, if_absent)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def _path(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str, *, unless_tag: str | None = None) -> tuple[bytes, str] | None:
        try:
            data = self._path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"can't read {self._path(key)}: {exc}") from exc
        return data, sha256_hex(data)

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        with open(path.parent / f".{path.name}.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_tag: str | None = None
    ) -> bool:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            try:
                # mkstemp makes the file 0600; published models must be readable by other users
                # (the database server's OS user, for one), as the umask allows.
                os.fchmod(fd, file_mode())
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                if if_absent:
                    try:
                        os.link(tmp, path)
                    except FileExistsError:
                        return False
                    return True
                if if_tag is not None:
                    with self._locked(path):
                        current = self.get(key)
                        if current is None or current[1] != if_tag:
                            return False
                        os.replace(tmp, path)
                        return True
                os.replace(tmp, path)
                return True
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        except OSError as exc:
            raise StoreError(f"can't write {path}: {exc}") from exc

    def children(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if not p.name.startswith("."))


class S3Blobs:
    """An S3 bucket and prefix; boto3 is imported on first use. Honours AWS_ENDPOINT_URL."""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
            except ImportError as exc:
                raise StoreError(
                    f"store {self.url} needs boto3; install it with pip install 'scorekit[s3]'"
                ) from exc
            self._client = boto3.client("s3")
        return self._client

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, action: str, key: str, exc: Exception) -> StoreError:
        return StoreError(f"can't {action} s3://{self.bucket}/{self._key(key)}: {exc}")

    def get(self, key: str, *, unless_tag: str | None = None) -> tuple[bytes, str] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        condition = {"IfNoneMatch": unless_tag} if unless_tag else {}
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key), **condition)
            return response["Body"].read(), response["ETag"]
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code in ("304", "NotModified") and unless_tag:
                return b"", unless_tag
            if code in ("NoSuchKey", "404"):
                return None
            raise self._fail("read", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("read", key, exc) from exc

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_tag: str | None = None
    ) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        conditions: dict[str, str] = {}
        if if_absent:
            conditions["IfNoneMatch"] = "*"
        elif if_tag is not None:
            conditions["IfMatch"] = if_tag
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **conditions)
            return True
        except ClientError as exc:
            if exc.response["Error"]["Code"] in (
                "PreconditionFailed",
                "ConditionalRequestConflict",
            ):
                return False
            raise self._fail("write", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("write", key, exc) from exc

    def children(self, prefix: str) -> list[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = self._key(prefix)
        names: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full, Delimiter="/"
            )
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    names.append(common["Prefix"][len(full) :].rstrip("/"))
                for obj in page.get("Contents", []):
                    names.append(obj["Key"][len(full) :])
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("list", prefix, exc) from exc
        return sorted(n for n in names if n and not n.startswith("."))


class CachedBlobs:
    """Another Blobs with a local copy of every published version's files, which never change
    once published (manifests and artifacts; claims and aliases.json are always read through).
    For functions that restart: Lambda keeps /tmp between invocations of an environment."""

    def __init__(self, inner: Blobs, directory: Path) -> None:
        self.inner = inner
        self.directory = directory
        self.url = inner.url

    @staticmethod
    def _immutable(key: str) -> bool:
        parts = key.split("/")
        return len(parts) == 4 and parts[1] == "versions" and parts[3] != _CLAIM

    def get(self, key: str, *, unless_tag: str | None = None) -> tuple[bytes, str] | None:
        if not self._immutable(key):
            return self.inner.get(key, unless_tag=unless_tag)
        copy = self.directory / key
        try:
            data = copy.read_bytes()
            return data, sha256_hex(data)
        except OSError:
            pass
        found = self.inner.get(key)
        if found is not None:
            with contextlib.suppress(OSError):  # a full or read-only disk: just don't cache
                LocalBlobs(self.directory).put(key, found[0])
        return found

    def put(
        self, key: str, data: bytes, *, if_absent: bool = False, if_tag: str | None = None
    ) -> bool:
        return self.inner.put(key, data, if_absent=if_absent, if_tag=if_tag)

    def children(self, prefix: str) -> list[str]:
        return self.inner.children(prefix)


class ModelStore:
    """Published model versions and their champion alias, on any Blobs backend."""

    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs
        self.url = blobs.url

    def __repr__(self) -> str:
        return f"ModelStore({self.url!r})"

    # --- reading -----------------------------------------------------------------------------
    def models(self) -> list[str]:
        return [n for n in self.blobs.children("") if self.versions(n)]

    def versions(self, name: str) -> list[str]:
        """Published versions of ``name``, oldest first; claimed but unfinished ones are skipped."""
        check_name(name)
        candidates = [v for v in self.blobs.children(f"{name}/versions/") if v.isdigit()]
        done = [
            v for v in candidates if MANIFEST_FILE in self.blobs.children(f"{name}/versions/{v}/")
        ]
        return sorted(done, key=int)

    def _missing_model(self, name: str) -> ModelNotFoundError:
        available = self.models()
        return ModelNotFoundError(
            f"no model named {name!r} in store {self.url}; available: "
            f"{', '.join(available) if available else 'none (publish one with scorekit train)'}"
        )

    def resolve(self, name: str, ref: str | None = None) -> str:
        """The version that ``name@ref`` means: a version number, or an alias (default champion)."""
        versions = self.versions(name)
        if not versions:
            raise self._missing_model(name)
        ref = ref or CHAMPION
        if ref.isdigit():
            if ref not in versions:
                raise ModelNotFoundError(
                    f"model {name!r} has no version {ref} in store {self.url}; "
                    f"versions: {', '.join(versions)}"
                )
            return ref
        aliases = self.aliases(name)
        if ref not in aliases:
            raise ModelNotFoundError(
                f"model {name!r} has no alias {ref!r} in store {self.url}; aliases: "
                f"{', '.join(aliases) or 'none'}; versions: {', '.join(versions)}. "
                f"Promote one with: scorekit models promote {name} <version>"
            )
        return str(aliases[ref]["version"])

    def manifest(self, name: str, version: str) -> Manifest:
        check_name(name)
        check_name(version, "version")
        where = f"{self.url}/{name}/versions/{version}/{MANIFEST_FILE}"
        found = self.blobs.get(f"{name}/versions/{version}/{MANIFEST_FILE}")
        if found is None:
            self.resolve(name, version)  # raises naming what is available
            raise ModelNotFoundError(f"{where} does not exist")
        return Manifest.from_json(found[0], where)

    def bundle(self, name: str, version: str) -> Bundle:
        manifest = self.manifest(name, version)
        prefix = f"{name}/versions/{version}/"

        def read(artifact: str) -> bytes | None:
            found = self.blobs.get(prefix + artifact)
            return found[0] if found else None

        return Bundle(manifest, read, f"{self.url}/{prefix.rstrip('/')}")

    def aliases_tagged(
        self, name: str, known: tuple[str, dict[str, Any]] | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        """(tag, aliases) of ``name``, or None if it has none. When ``known`` still holds the
        current tag, ``known`` itself, without reading the file again (on S3 a conditional GET
        on the ETag)."""
        check_name(name)
        key = f"{name}/{_ALIASES}"
        found = self.blobs.get(key, unless_tag=known[0] if known else None)
        if found is None:
            return None
        if known is not None and found[1] == known[0]:
            return known
        return found[1], _parse_aliases(found[0], f"{self.url}/{key}")

    def aliases(self, name: str) -> dict[str, Any]:
        check_name(name)
        found = self.blobs.get(f"{name}/{_ALIASES}")
        return _parse_aliases(found[0], f"{self.url}/{name}/{_ALIASES}") if found else {}

    # --- writing -----------------------------------------------------------------------------
    def publish(
        self, manifest: Manifest, artifacts: dict[str, bytes], *, promote: bool | None = None
    ) -> str:
        """Write a new immutable version; returns its number. ``promote=None`` makes the first
        version of a model its champion; True always promotes; False never does."""
        name = check_name(manifest.name)
        existing = self.blobs.children(f"{name}/versions/")
        version = max((int(v) for v in existing if v.isdigit()), default=0) + 1
        while not self.blobs.put(f"{name}/versions/{version}/{_CLAIM}", b"", if_absent=True):
            version += 1
        manifest.version = str(version)
        manifest.created = manifest.created or utc_now()
        manifest.artifacts = {fn: sha256_hex(data) for fn, data in artifacts.items()}
        for filename, data in artifacts.items():
            self.blobs.put(f"{name}/versions/{version}/{filename}", data)
        self.blobs.put(f"{name}/versions/{version}/{MANIFEST_FILE}", manifest.to_json())
        if promote:
            self._move_champion(name, str(version), "promote")
        elif promote is None:
            self._move_champion(name, str(version), "publish")  # only if there is no champion
        return str(version)

    def promote(self, name: str, version: str) -> str:
        version = self.resolve(name, version)
        self._move_champion(name, version, "promote")
        return version

    def rollback(self, name: str) -> str:
        """Make the champion before the current one champion again; returns its version."""
        self.resolve(name)
        return self._move_champion(name, None, "rollback")

    def champion_history(self, name: str) -> list[dict[str, Any]]:
        return list(self.aliases(name).get(CHAMPION, {}).get("history", []))

    def _move_champion(self, name: str, version: str | None, action: str) -> str:
        """Compare-and-swap aliases.json. "publish" sets the champion only if there is none (so
        of two concurrent first publishes, exactly one becomes champion)."""
        key = f"{name}/{_ALIASES}"
        while True:
            found = self.blobs.get(key)
            aliases = _parse_aliases(found[0], f"{self.url}/{key}") if found else {}
            history = list(aliases.get(CHAMPION, {}).get("history", []))
            stack = champion_stack(history)
            if action == "publish" and stack:
                return stack[-1]
            if action == "rollback":
                if len(stack) < 2:
                    raise UsageError(
                        f"model {name!r} has no earlier champion to roll back to; champion "
                        f"history: {', '.join(stack) or 'empty'}"
                    )
                version = stack[-2]
            assert version is not None
            entry = {"version": version, "action": action, "at": utc_now()}
            if stack:
                entry["previous"] = stack[-1]
            history.append(entry)
            aliases[CHAMPION] = {"version": version, "history": history}
            data = (json.dumps(aliases, indent=2) + "\n").encode()
            if found is None:
                written = self.blobs.put(key, data, if_absent=True)
            else:
                written = self.blobs.put(key, data, if_tag=found[1])
            if written:
                return version


def _parse_aliases(data: bytes, where: str) -> dict[str, Any]:
    try:
        aliases = json.loads(data)
        if not isinstance(aliases, dict):
            raise ValueError("not a JSON object")
        champion_stack(aliases.get(CHAMPION, {}).get("history", []))
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise StoreError(
            f"{where} is corrupt ({type(exc).__name__}: {exc}); restore it from a backup or "
            "rewrite it with scorekit models promote NAME VERSION"
        ) from exc
    return aliases


def champion_stack(history: list[dict[str, Any]]) -> list[str]:
    """Replay the champion history: publish and promote push a version, rollback pops one."""
    stack: list[str] = []
    for entry in history:
        if entry["action"] == "rollback":
            stack.pop()
        else:
            stack.append(str(entry["version"]))
    return stack


def open_store(
    url: str | os.PathLike[str] | ModelStore | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ModelStore:
    """The store at ``url``: ``s3://bucket/prefix`` or a directory; ``cache_dir``: keep local
    copies of published versions there (CachedBlobs).

    Default: $SCOREKIT_STORE, else ``pmml/`` (relative to the working directory)."""
    if isinstance(url, ModelStore):
        return url
    text = os.fspath(url) if url is not None else os.environ.get("SCOREKIT_STORE") or DEFAULT_STORE
    if text.startswith("s3://"):
        bucket, _, prefix = text[len("s3://") :].partition("/")
        if not bucket:
            raise UsageError(f"store URL {text!r} names no bucket; expected s3://bucket/prefix")
        blobs: Blobs = S3Blobs(bucket, prefix)
        if cache_dir is not None:
            blobs = CachedBlobs(blobs, Path(cache_dir) / bucket / prefix)
        return ModelStore(blobs)
    if "://" in text and not text.startswith("file://"):
        raise UsageError(
            f"store URL {text!r} is not supported; expected a directory or s3://bucket/prefix"
        )
    return ModelStore(LocalBlobs(Path(text.removeprefix("file://"))))
