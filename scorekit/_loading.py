"""load_model: from a file, a bundle directory or a store reference to a scoring Model."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ._bundle import MANIFEST_FILE, PICKLE_FILE, PMML_FILE, Bundle
from ._errors import (
    EngineUnavailableError,
    IncompatibleModelError,
    ModelError,
    ModelNotFoundError,
    UnsupportedModelError,
    UsageError,
)
from ._manifest import Manifest
from ._model import Model
from ._pmml_header import manifest_from_pmml
from ._scorer import AUTO_ORDER, ENGINES, Scorer
from ._store import ModelStore, check_name, open_store

log = logging.getLogger("scorekit")

# Reasons engine="auto" moves on to the next engine. An IntegrityError is never one of them: a
# tampered artifact is refused outright, not quietly scored from the other format.
_FALL_THROUGH = (
    EngineUnavailableError,
    IncompatibleModelError,
    UnsupportedModelError,
    ModelNotFoundError,
)


def parse_ref(ref: str) -> tuple[str, str | None]:
    """'audit' -> ('audit', None); 'audit@champion' -> ('audit', 'champion'); 'audit@3'."""
    name, _, selector = ref.partition("@")
    check_name(name)
    if selector:
        check_name(selector, "version or alias")
    return name, selector or None


def looks_like_path(source: str) -> bool:
    """Whether ``source`` names a file or bundle directory rather than a store reference."""
    return (
        os.sep in source
        or source.endswith((".pmml", ".pkl", ".xml"))
        or (Path(source) / MANIFEST_FILE).is_file()
    )


def resolve_bundle(
    source: str | os.PathLike[str], store: str | os.PathLike[str] | ModelStore | None = None
) -> Bundle:
    """The Bundle that ``source`` names: a path to a .pmml/.pkl file or bundle directory, or a
    store reference ``name``, ``name@alias`` or ``name@version`` (looked up in ``store``)."""
    text = os.fspath(source)
    if isinstance(source, os.PathLike) or looks_like_path(text):
        return _bundle_from_path(Path(text))
    name, selector = parse_ref(text)
    model_store = open_store(store)
    return model_store.bundle(name, model_store.resolve(name, selector))


def _bundle_from_path(path: Path) -> Bundle:
    if path.is_dir():
        return Bundle.from_directory(path)
    if not path.is_file():
        raise ModelNotFoundError(
            f"model file {path} does not exist; pass a .pmml or .pkl file, a bundle directory, "
            "or a store reference such as audit@champion"
        )
    beside = path.parent / MANIFEST_FILE
    if path.name in (PMML_FILE, PICKLE_FILE) and beside.is_file():
        return Bundle.from_directory(path.parent)  # verified against its manifest
    data = path.read_bytes()
    if path.suffix == ".pkl":
        return _standalone_pickle(path, data)
    manifest = manifest_from_pmml(data, path.stem, str(path))
    manifest.artifacts = {PMML_FILE: ""}
    return Bundle(manifest, lambda _artifact: data, str(path), verify=False)


class PickledBundle(Bundle):
    """A standalone .pkl, already unpickled to read the manifest stored inside it."""

    def __init__(self, manifest: Manifest, pipeline: object, where: str) -> None:
        super().__init__(manifest, lambda _artifact: None, where, verify=False)
        self.pipeline = pipeline


def _standalone_pickle(path: Path, data: bytes) -> Bundle:
    """A .pkl with no manifest beside it: scorekit's training stores the manifest inside it."""
    from ._engine_sklearn import unpickle

    pipeline = unpickle(data, str(path))
    described = getattr(pipeline, "scorekit_manifest_", None)
    if not isinstance(described, dict):
        raise UnsupportedModelError(
            f"{path} was not made by scorekit train, so its input schema is unknown; load it "
            f"from its bundle directory (with {MANIFEST_FILE}) or score its PMML instead"
        )
    manifest = Manifest.from_dict({**described, "name": described.get("name") or path.stem})
    manifest.artifacts = {PICKLE_FILE: ""}
    return PickledBundle(manifest, pipeline, str(path))


def open_scorer(
    bundle: Bundle, engine: str = "auto", order: tuple[str, ...] = AUTO_ORDER
) -> Scorer:
    """Load ``bundle`` in ``engine``; "auto" tries ``order`` and logs which engine runs and why."""
    if engine != "auto":
        if engine not in ENGINES:
            raise UsageError(
                f"unknown engine {engine!r}; choose one of: auto, {', '.join(ENGINES)}"
            )
        return _load_in(bundle, engine)
    skipped: list[str] = []
    for name in order:
        try:
            scorer = _load_in(bundle, name)
        except _FALL_THROUGH as exc:
            skipped.append(f"{name}: {exc.message}")
            continue
        why = f" (skipped {'; '.join(skipped)})" if skipped else ""
        log.info("model %s: scoring with the %s engine%s", bundle.manifest.ref, name, why)
        return scorer
    raise ModelError(f"no engine can score model {bundle.manifest.ref}: {' | '.join(skipped)}")


def _load_in(bundle: Bundle, engine: str) -> Scorer:
    if isinstance(bundle, PickledBundle):
        if engine != "sklearn":
            raise UnsupportedModelError(
                f"{bundle.where} is a pickle; only the sklearn engine scores pickles"
            )
        from ._engine_sklearn import SklearnScorer

        return SklearnScorer(bundle.pipeline, bundle.manifest)
    return ENGINES[engine](bundle)


def load_model(
    source: str | os.PathLike[str],
    *,
    engine: str = "auto",
    store: str | os.PathLike[str] | ModelStore | None = None,
) -> Model:
    """Load a model for scoring.

    ``source``: a .pmml or .pkl file, a bundle directory, or a store reference ``name``
    (its champion), ``name@champion`` or ``name@<version>``. ``store``: a directory or
    ``s3://bucket/prefix`` (default ``$SCOREKIT_STORE`` or ``pmml/``). ``engine``: "auto"
    (default: native, then pypmml, then sklearn), "native", "pypmml" or "sklearn". A path to a
    .pkl file means that pickle: "auto" then scores it with the sklearn engine.
    """
    bundle = resolve_bundle(source, store)
    if engine == "auto" and os.fspath(source).endswith(".pkl"):
        engine = "sklearn"
    return Model(bundle.manifest, open_scorer(bundle, engine))
