"""Azure Blob Storage for file-drop scoring: the blob a BlobCreated event names, streamed in
and scored with scorekit._filedrop, the scored file uploaded in blocks, or an error report put
beside the input. Used by function_app.py's Event Grid function; azure-storage-blob only here."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from scorekit import _filedrop, _http

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
# /blobServices/default/containers/<container>/blobs/<name>, the subject of a blob event
_SUBJECT = re.compile(r"^/blobServices/default/containers/(?P<container>[^/]+)/blobs/(?P<name>.+)$")


def blob_of(subject: str) -> tuple[str, str] | None:
    """(container, blob name) from a blob event's subject; None for another subject."""
    match = _SUBJECT.match(subject)
    return (match["container"], match["name"]) if match else None


def service_client() -> Any:
    """The storage account the drops land in: SCOREKIT_BLOB_CONNECTION_STRING, else the
    Function App's own AzureWebJobsStorage."""
    from azure.storage.blob import BlobServiceClient

    connection = os.environ.get("SCOREKIT_BLOB_CONNECTION_STRING") or os.environ.get(
        "AzureWebJobsStorage"  # noqa: SIM112 - the name Azure gives this app setting
    )
    if not connection:
        raise RuntimeError(
            "file drops need a storage connection string: set SCOREKIT_BLOB_CONNECTION_STRING "
            "(or AzureWebJobsStorage) in the app settings"
        )
    return BlobServiceClient.from_connection_string(connection)


def score_blob(
    service: Any, models: _http.Models, container: str, name: str
) -> _filedrop.DropOutcome | None:
    """Score one dropped blob; None when it is not a CSV under the input prefix, or is gone."""
    from azure.core.exceptions import ResourceNotFoundError

    drop = _filedrop.DropSettings.from_env(os.environ)
    if not _filedrop.wants(name, drop.input_prefix):
        return None
    source = service.get_blob_client(container, name)
    try:
        # One download, read a chunk at a time as the CSV reader asks: memory holds a chunk.
        stream = _filedrop.ByteChunks(source.download_blob(max_concurrency=1).chunks())
    except ResourceNotFoundError:
        return None  # deleted since the event: nothing to score

    def upload(path: Path, key: str) -> None:
        with open(path, "rb") as f:  # uploaded in blocks, not read whole
            service.get_blob_client(container, key).upload_blob(
                f, overwrite=True, max_concurrency=1
            )

    def put_report(key: str, data: bytes) -> None:
        from azure.storage.blob import ContentSettings

        service.get_blob_client(container, key).upload_blob(
            data, overwrite=True, content_settings=ContentSettings(content_type="application/json")
        )

    return _filedrop.score_drop(
        models,
        name,
        stream,
        upload,
        put_report,
        input_prefix=drop.input_prefix,
        output_prefix=drop.output_prefix,
        chunk_size=drop.chunk_size,
    )
