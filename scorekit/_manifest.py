"""manifest.json: what a published model version is, and how to check its artifacts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._errors import IntegrityError
from ._schema import InputSchema

FORMAT_VERSION = 1
TASKS = ("classification", "regression")


@dataclass
class Manifest:
    """Name, version, task, target, classes, input schema, metrics, artifact digests, libraries."""

    name: str
    version: str
    task: str
    target: str
    schema: InputSchema
    classes: list[Any] | None = None
    created: str = ""
    algorithm: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)  # file name -> sha256 hex
    libraries: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}" if self.version else self.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "task": self.task,
            "target": self.target,
            "classes": self.classes,
            "algorithm": self.algorithm,
            "schema": self.schema.to_list(),
            "metrics": self.metrics,
            "artifacts": self.artifacts,
            "libraries": self.libraries,
            **({"extra": self.extra} if self.extra else {}),
        }

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n").encode()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        if data.get("task") not in TASKS:
            raise ValueError(f"task {data.get('task')!r} is not one of {TASKS}")
        return cls(
            name=data["name"],
            version=str(data.get("version", "")),
            task=data["task"],
            target=data["target"],
            schema=InputSchema.from_list(data["schema"]),
            classes=data.get("classes"),
            created=data.get("created", ""),
            algorithm=data.get("algorithm", ""),
            metrics=dict(data.get("metrics", {})),
            artifacts=dict(data.get("artifacts", {})),
            libraries=dict(data.get("libraries", {})),
            extra=dict(data.get("extra", {})),
        )

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Manifest:
        try:
            return cls.from_dict(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(
                f"manifest {where} is not a valid scorekit manifest ({type(exc).__name__}: {exc}); "
                "republish the model"
            ) from exc
