"""A model version's artifacts, read through a check of each file's sha256 against the manifest."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from ._errors import IntegrityError, ModelNotFoundError
from ._manifest import Manifest

PMML_FILE = "model.pmml"
PICKLE_FILE = "model.pkl"
MANIFEST_FILE = "manifest.json"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Bundle:
    """A manifest plus a way to read its artifacts.

    With ``verify`` (every published version), ``read`` refuses bytes whose sha256 differs from
    the manifest's, before anything parses or unpickles them. A standalone .pmml or .pkl file given
    by path has no recorded digest, and is read as it is.
    """

    def __init__(
        self,
        manifest: Manifest,
        read_bytes: Callable[[str], bytes | None],
        where: str,
        *,
        verify: bool = True,
    ) -> None:
        self.manifest = manifest
        self.where = where
        self._read_bytes = read_bytes
        self._verify = verify

    def has(self, artifact: str) -> bool:
        return artifact in self.manifest.artifacts

    def read(self, artifact: str) -> bytes:
        if not self.has(artifact):
            raise ModelNotFoundError(
                f"model {self.manifest.ref} at {self.where} has no {artifact}; "
                f"it has {', '.join(sorted(self.manifest.artifacts)) or 'no artifacts'}"
            )
        data = self._read_bytes(artifact)
        if data is None:
            raise IntegrityError(
                f"{artifact} of model {self.manifest.ref} is listed in its manifest but missing "
                f"from {self.where}; republish the model"
            )
        if self._verify:
            expected = self.manifest.artifacts[artifact]
            actual = sha256_hex(data)
            if actual != expected:
                raise IntegrityError(
                    f"{artifact} of model {self.manifest.ref} at {self.where} fails its integrity "
                    f"check: sha256 is {actual}, the manifest says {expected}. The file was "
                    "changed or corrupted after publishing; it was not loaded. Republish the model."
                )
        return data

    @classmethod
    def from_directory(cls, path: Path) -> Bundle:
        manifest_path = path / MANIFEST_FILE
        if not manifest_path.is_file():
            raise ModelNotFoundError(
                f"{path} is not a model bundle: it has no {MANIFEST_FILE}. Pass a bundle "
                "directory, a .pmml or .pkl file, or a store reference such as audit@champion."
            )
        manifest = Manifest.from_json(manifest_path.read_bytes(), str(manifest_path))

        def read_file(artifact: str) -> bytes | None:
            target = path / artifact
            return target.read_bytes() if target.is_file() else None

        return cls(manifest, read_file, str(path))
