"""Model stores: the same behaviour on a directory, on S3 in-process (mock_aws) and on the
standalone moto server."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import scorekit
from scorekit import (
    Field,
    InputSchema,
    Manifest,
    ModelNotFoundError,
    ModelStore,
    StoreError,
    UsageError,
    open_store,
)
from scorekit._store import LocalBlobs, S3Blobs, champion_stack


def make_manifest(name: str = "demo") -> Manifest:
    return Manifest(
        name=name,
        version="",
        task="regression",
        target="y",
        schema=InputSchema((Field("x", "continuous", "double"),)),
    )


@pytest.fixture(params=["local", "s3-mock_aws", "s3-moto_server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModelStore]:
    if request.param == "local":
        yield open_store(tmp_path / "store")
        return
    request.getfixturevalue("aws_credentials")
    bucket = f"models-{uuid.uuid4().hex[:12]}"
    if request.param == "s3-mock_aws":
        from moto import mock_aws

        with mock_aws():
            _create_bucket(bucket)
            yield open_store(f"s3://{bucket}/team/models")
        return
    url = request.getfixturevalue("moto_server")
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    _create_bucket(bucket)
    yield open_store(f"s3://{bucket}/team/models")


def _create_bucket(bucket: str) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket=bucket)


def publish(
    store: ModelStore, name: str = "demo", promote: bool | None = None, content: bytes = b"<PMML/>"
) -> str:
    return store.publish(make_manifest(name), {"model.pmml": content}, promote=promote)


def test_open_store_picks_the_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(open_store(tmp_path).blobs, LocalBlobs)
    assert isinstance(open_store("s3://bucket/some/prefix").blobs, S3Blobs)
    monkeypatch.setenv("SCOREKIT_STORE", str(tmp_path / "env"))
    assert open_store().url == str(tmp_path / "env")
    monkeypatch.delenv("SCOREKIT_STORE")
    assert open_store().url == "pmml"
    with pytest.raises(UsageError, match="not supported"):
        open_store("ftp://host/x")
    with pytest.raises(UsageError, match="no bucket"):
        open_store("s3:///prefix")


def test_publish_numbers_versions_and_first_is_champion(store: ModelStore) -> None:
    assert publish(store) == "1"
    assert publish(store) == "2"
    assert store.versions("demo") == ["1", "2"]
    assert store.resolve("demo") == "1"  # only the first version became champion
    assert store.resolve("demo", "champion") == "1"
    assert store.resolve("demo", "2") == "2"
    assert store.models() == ["demo"]


def test_published_version_holds_manifest_with_digests(store: ModelStore) -> None:
    version = publish(store, content=b"<PMML>abc</PMML>")
    bundle = store.bundle("demo", version)
    assert bundle.manifest.version == version and bundle.manifest.created
    assert bundle.manifest.artifacts["model.pmml"] == scorekit._bundle.sha256_hex(
        b"<PMML>abc</PMML>"
    )
    assert bundle.read("model.pmml") == b"<PMML>abc</PMML>"


def test_tampered_artifact_is_refused(store: ModelStore) -> None:
    version = publish(store)
    store.blobs.put(f"demo/versions/{version}/model.pmml", b"<PMML>evil</PMML>")
    with pytest.raises(scorekit.IntegrityError, match="fails its integrity check"):
        store.bundle("demo", version).read("model.pmml")


def test_half_written_version_is_invisible(store: ModelStore) -> None:
    publish(store)
    # A publisher that died after claiming version 2 and writing an artifact, before the manifest.
    store.blobs.put("demo/versions/2/.claim", b"", if_absent=True)
    store.blobs.put("demo/versions/2/model.pmml", b"partial")
    assert store.versions("demo") == ["1"]
    assert publish(store) == "3"  # the claimed number is not reused


def test_promote_rollback_and_history(store: ModelStore) -> None:
    for _ in range(3):
        publish(store)
    assert store.promote("demo", "3") == "3"
    assert store.promote("demo", "2") == "2"
    assert store.rollback("demo") == "3"
    assert store.rollback("demo") == "1"
    with pytest.raises(UsageError, match="no earlier champion"):
        store.rollback("demo")
    actions = [(e["action"], e["version"]) for e in store.champion_history("demo")]
    assert actions == [
        ("publish", "1"),
        ("promote", "3"),
        ("promote", "2"),
        ("rollback", "3"),
        ("rollback", "1"),
    ]


def test_unknown_model_version_and_alias_list_what_exists(store: ModelStore) -> None:
    publish(store)
    with pytest.raises(ModelNotFoundError, match=r"no model named 'nope'.*available: demo"):
        store.resolve("nope")
    with pytest.raises(ModelNotFoundError, match=r"no version 7.*versions: 1"):
        store.resolve("demo", "7")
    with pytest.raises(ModelNotFoundError, match=r"no alias 'staging'.*aliases: champion"):
        store.resolve("demo", "staging")
    with pytest.raises(ModelNotFoundError, match="no version 9"):
        store.promote("demo", "9")


def test_invalid_model_name_is_refused(store: ModelStore) -> None:
    with pytest.raises(UsageError, match="not valid"):
        publish(store, name="../escape")


def test_concurrent_publishers_get_distinct_versions(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    versions: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        version = publish(store, promote=True)
        with lock:
            versions.append(version)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(versions, key=int) == [str(i) for i in range(1, 9)]
    # Every promote landed in the history: compare-and-swap lost none.
    assert len(store.champion_history("demo")) == 8


def test_champion_stack_replays_history() -> None:
    history = [
        {"action": "publish", "version": "1"},
        {"action": "promote", "version": "2"},
        {"action": "rollback", "version": "1"},
        {"action": "promote", "version": "3"},
    ]
    assert champion_stack(history) == ["1", "3"]


def test_unreachable_s3_is_a_store_error(
    aws_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StoreError, match="s3://nobucket"):
        open_store("s3://nobucket/models").models()


def test_missing_bucket_is_a_store_error(aws_credentials: None) -> None:
    from moto import mock_aws

    with mock_aws(), pytest.raises(StoreError, match="NoSuchBucket"):
        open_store("s3://absent-bucket/models").models()


def test_aliases_json_is_readable(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    publish(store)
    data = json.loads((tmp_path / "demo" / "aliases.json").read_text())
    assert data["champion"]["version"] == "1"


def test_names_cannot_escape_the_store(store: ModelStore) -> None:
    publish(store)
    for bad in ("../outside", "a/b", ".hidden", ""):
        with pytest.raises(UsageError, match="not valid"):
            store.promote(bad, "1")
        with pytest.raises(UsageError, match="not valid"):
            store.rollback(bad)
    with pytest.raises(UsageError, match="not valid"):
        store.manifest("demo", "../../x")


def test_published_files_are_readable_by_other_users(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    version = publish(store)
    umask = os.umask(0o022)
    os.umask(umask)
    expected = 0o666 & ~umask
    for path in (tmp_path / "demo" / "versions" / version).iterdir():
        if not path.name.startswith("."):
            assert path.stat().st_mode & 0o777 == expected, path
    assert (tmp_path / "demo" / "aliases.json").stat().st_mode & 0o777 == expected


def test_concurrent_first_publishes_make_exactly_one_champion(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    barrier = threading.Barrier(6)

    def worker() -> None:
        barrier.wait()
        publish(store)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = store.champion_history("demo")
    assert len(history) == 1 and history[0]["action"] == "publish"


def test_corrupt_aliases_file_is_a_clear_store_error(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    publish(store)
    (tmp_path / "demo" / "aliases.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"aliases\.json is corrupt"):
        store.resolve("demo")


def test_aliases_are_read_again_only_when_they_changed(store: ModelStore) -> None:
    publish(store)
    first = store.aliases_tagged("demo")
    assert first is not None and first[1]["champion"]["version"] == "1"
    assert store.aliases_tagged("demo", first) is first  # unchanged: the same object back
    publish(store, promote=True)
    second = store.aliases_tagged("demo", first)
    assert second is not None and second is not first
    assert second[1]["champion"]["version"] == "2"
    assert store.aliases_tagged("nothing") is None


def test_s3_conditional_get_transfers_nothing_when_unchanged(aws_credentials: None) -> None:
    from moto import mock_aws

    with mock_aws():
        _create_bucket("conditional")
        blobs = S3Blobs("conditional", "p")
        blobs.put("k", b"payload")
        _, tag = blobs.get("k")  # type: ignore[misc]
        assert blobs.get("k", unless_tag=tag) == (b"", tag)
        blobs.put("k", b"changed")
        assert blobs.get("k", unless_tag=tag)[0] == b"changed"  # type: ignore[index]


def test_cached_blobs_keep_published_versions_locally(tmp_path: Path) -> None:
    from scorekit._store import CachedBlobs

    inner = LocalBlobs(tmp_path / "remote")
    store = ModelStore(CachedBlobs(inner, tmp_path / "cache"))
    version = publish(store, content=b"<PMML>v1</PMML>")
    assert store.bundle("demo", version).read("model.pmml") == b"<PMML>v1</PMML>"
    assert (tmp_path / "cache" / "demo" / "versions" / version / "model.pmml").is_file()
    assert not (tmp_path / "cache" / "demo" / "aliases.json").exists()  # always read through
    (tmp_path / "remote" / "demo" / "versions" / version / "model.pmml").unlink()
    assert store.bundle("demo", version).read("model.pmml") == b"<PMML>v1</PMML>"
