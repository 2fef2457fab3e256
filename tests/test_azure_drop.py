"""File-drop batch scoring on Azure: the Event Grid function of function_app.py, called
in-process as Azure's docs show, against Azurite (Azure's own storage emulator, a real server
in its own process). A CSV dropped under input/<model>/ is streamed, scored in chunks and written
under output/; a bad file gets an error report beside it and no output."""

from __future__ import annotations

import csv
import datetime as dt
import importlib
import io
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import scorekit

ROOT = Path(__file__).resolve().parents[1]
AZURITE = Path(sys.prefix) / "azurite" / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT = "devstoreaccount1"
# Azurite's documented, fixed development key (not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's blob service on a free loopback port; yields its connection string."""
    assert AZURITE.exists(), f"{AZURITE} is missing: make setup installs Azurite"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
         str(tmp_path_factory.mktemp("azurite")), "--silent", "--skipApiVersionCheck"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("Azurite did not start within 30 s")
            time.sleep(0.1)
    yield (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )
    process.terminate()  # Azurite waits for open client connections; don't
    try:
        process.wait(timeout=3)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def container(azurite: str) -> Any:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite)
    return service.create_container(f"drops-{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="module")
def drop_function(session_store, trained, azurite: str) -> Any:
    """function_app's scorekit_blob_drop, as the Functions host would call it."""
    trained("audit")
    settings = {"SCOREKIT_STORE": str(session_store.url), "SCOREKIT_CHUNK_ROWS": "500",
                "SCOREKIT_BLOB_CONNECTION_STRING": azurite}  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        for name, value in settings.items():
            patch.setenv(name, value)
        patch.syspath_prepend(str(ROOT))
        module = importlib.reload(importlib.import_module("function_app"))
        functions = {f.get_function_name(): f for f in module.app.get_functions()}  # once per app
        yield functions["scorekit_blob_drop"].get_user_function()


def blob_created(
    container: str, name: str, event_type: str = "Microsoft.Storage.BlobCreated"
) -> Any:
    """A BlobCreated event as Event Grid delivers it."""
    import azure.functions as func

    return func.EventGridEvent(
        id=str(uuid.uuid4()),
        data={"api": "PutBlob", "url": f"http://127.0.0.1/{ACCOUNT}/{container}/{name}"},
        topic=f"/subscriptions/x/resourceGroups/y/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}",
        subject=f"/blobServices/default/containers/{container}/blobs/{name}",
        event_type=event_type,
        event_time=dt.datetime.now(dt.UTC),
        data_version="1",
    )


def read_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def test_a_dropped_csv_is_scored_into_the_output_prefix(
    drop_function, container, session_store, trained, data_dir: Path
) -> None:
    manifest = trained("audit")
    name = f"input/{manifest.name}/applications.csv"
    container.upload_blob(name, (data_dir / "audit.csv").read_bytes())
    drop_function(blob_created(container.container_name, name))
    scored = read_csv(container.download_blob(f"output/{manifest.name}/applications.csv").readall())
    model = scorekit.load_model(manifest.ref, store=session_store)
    with open(data_dir / "audit.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    expected = model.predict_columns({n: [r[n] for r in rows] for n in model.input_fields})
    assert len(scored) == 1899
    assert [float(r["probability(1)"]) for r in scored] == expected["probability(1)"].tolist()
    names = sorted(b.name for b in container.list_blobs())
    assert names == [name, f"output/{manifest.name}/applications.csv"]


def test_a_bad_file_gets_an_error_report_and_no_output(
    drop_function, container, trained, data_dir: Path
) -> None:
    manifest = trained("audit")
    lines = (data_dir / "audit.csv").read_text().splitlines()
    lines[1200] = lines[1200].replace("Private", "Martian", 1)
    name = f"input/{manifest.name}@{manifest.version}/bad.csv"
    container.upload_blob(name, "\n".join(lines).encode())
    drop_function(blob_created(container.container_name, name))
    report = json.loads(container.download_blob(name + ".error.json").readall())
    assert report["error"]["code"] == "invalid_input"
    assert "unseen category 'Martian'" in report["error"]["message"]
    assert report["output"] == "none: nothing was written"
    assert sorted(b.name for b in container.list_blobs()) == [name, name + ".error.json"]


def test_other_events_and_blobs_are_left_alone(drop_function, container) -> None:
    container.upload_blob("input/audit/notes.txt", b"not a csv")
    container.upload_blob("elsewhere/audit/x.csv", b"a,b\n1,2\n")
    drop_function(blob_created(container.container_name, "input/audit/notes.txt"))
    drop_function(blob_created(container.container_name, "elsewhere/audit/x.csv"))
    drop_function(blob_created(container.container_name, "input/audit/gone.csv"))  # deleted
    drop_function(
        blob_created(container.container_name, "input/audit/x.csv", "Microsoft.Storage.BlobDeleted")
    )
    assert sorted(b.name for b in container.list_blobs()) == [
        "elsewhere/audit/x.csv", "input/audit/notes.txt",
    ]  # fmt: skip


def test_byte_chunks_reads_across_chunk_boundaries() -> None:
    from scorekit._filedrop import ByteChunks

    text = io.TextIOWrapper(ByteChunks([b"a,b\n1,", b"", b"2\n3,4", b"\n"]), encoding="utf-8")
    assert list(csv.reader(text)) == [["a", "b"], ["1", "2"], ["3", "4"]]
