"""`scorekit package lambda | azure`: deployment packages with only what scoring needs.

A package holds scorekit itself, numpy (from this virtualenv, which matches the platforms'
Linux x86_64 CPython 3.11), the adapter for the platform, and one model version as a store of
its own under ``pmml/`` (the store scorekit reads when SCOREKIT_STORE is unset), with that
version as champion. scikit-learn, scipy, pandas, pypmml and the JVM are left out unless asked
for (``extras=("sklearn",)`` adds what the sklearn engine needs, and the pickle). boto3 is left
out of the Lambda package: the runtime provides it.

The sizes are printed, and a package over its platform's limit is refused before it is written:
AWS Lambda takes 50 MiB zipped (uploaded directly) and 250 MiB unzipped; for Azure, whose limits
depend on the plan, scorekit stops at 1 GiB of its own accord.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from ._bundle import MANIFEST_FILE, PICKLE_FILE, PMML_FILE
from ._errors import UsageError
from ._loading import looks_like_path, parse_ref
from ._store import ModelStore, open_store

MIB = 1024 * 1024
LAMBDA_ZIPPED_LIMIT = 50 * MIB
LAMBDA_UNZIPPED_LIMIT = 250 * MIB
AZURE_LIMIT = 1024 * MIB
ROOT = Path(__file__).resolve().parents[1]
STORE_DIR = "pmml"
# What each platform's package needs besides scorekit, as distribution names.
LAMBDA_DISTRIBUTIONS = ("numpy",)
AZURE_DISTRIBUTIONS = ("numpy", "azure-storage-blob")  # the worker provides azure-functions
EXTRAS = {"sklearn": ("scikit-learn", "pandas"), "s3": ("boto3",)}
_SKIPPED_DIRS = {"__pycache__", "tests"}


@dataclass
class PackageReport:
    path: Path
    files: int
    unzipped_bytes: int
    zipped_bytes: int | None
    model: str

    def lines(self) -> list[str]:
        size = f"{self.unzipped_bytes / MIB:.1f} MiB unzipped"
        if self.zipped_bytes is not None:
            size = f"{self.zipped_bytes / MIB:.1f} MiB zipped, " + size
        return [f"{self.path}: {self.files} files, {size}, model {self.model}"]


def _requirements(name: str) -> list[str]:
    """The distributions ``name`` depends on (extras and markers for other platforms ignored)."""
    found = []
    for requirement in metadata.requires(name) or []:
        if "extra ==" in requirement:
            continue
        if ";" in requirement and (
            "platform_system" in requirement or "sys_platform" in requirement
        ):
            marker = requirement.split(";", 1)[1]
            if "win32" in marker or "Windows" in marker or "darwin" in marker:
                continue
        found.append(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0])
    return found


def _closure(names: tuple[str, ...]) -> list[metadata.Distribution]:
    """The installed distributions ``names`` and everything they require."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            seen[key] = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise UsageError(
                f"{name} is not installed in {sys.prefix}; a package copies it from "
                "there (make setup installs it)"
            ) from None
        todo.extend(_requirements(name))
    return list(seen.values())


def _copy_distribution(dist: metadata.Distribution, target: Path) -> None:
    for file in dist.files or []:
        parts = Path(file).parts
        if (parts and parts[0] in ("..", "bin")) or _SKIPPED_DIRS & set(parts):
            continue
        source = Path(str(dist.locate_file(file)))
        if source.is_file():
            destination = target / file
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def _copy_tree(source: Path, target: Path) -> None:
    shutil.copytree(
        source,
        target,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
        dirs_exist_ok=True,
    )


def _copy_model(ref: str, store: str | None, target: Path, with_pickle: bool) -> str:
    """One version of a store's model, as the champion of a store of its own at ``target``."""
    if looks_like_path(ref):
        raise UsageError(
            f"--model {ref} is a path; a package takes a model from the store: "
            "name, name@champion or name@<version> (publish the file first with scorekit train)"
        )
    name, selector = parse_ref(ref)
    source: ModelStore = open_store(store)
    version = source.resolve(name, selector)
    bundle = source.bundle(name, version)
    packaged = open_store(target)
    wanted = [MANIFEST_FILE, PMML_FILE] + ([PICKLE_FILE] if with_pickle else [])
    for filename in wanted:
        if filename == MANIFEST_FILE or bundle.has(filename):
            data = bundle.manifest.to_json() if filename == MANIFEST_FILE else bundle.read(filename)
            packaged.blobs.put(f"{name}/versions/{version}/{filename}", data)
    if not with_pickle and not bundle.has(PMML_FILE):
        raise UsageError(f"{name}@{version} has no model.pmml; package it with --extra sklearn")
    packaged.promote(name, version)
    return f"{name}@{version}"


def _size(directory: Path) -> tuple[int, int]:
    files = [p for p in directory.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def _refuse_if_over(what: str, size: int, limit: int, hint: str) -> None:
    if size > limit:
        raise UsageError(
            f"the {what} would be {size / MIB:.1f} MiB, over the limit of {limit / MIB:.0f} MiB; "
            f"{hint}"
        )


def package_lambda(
    ref: str, output: str | os.PathLike[str], store: str | None = None, extras: tuple[str, ...] = ()
) -> PackageReport:
    """A zip for AWS Lambda (handler functions.aws_lambda.handler, python3.11, x86_64)."""
    unknown = [e for e in extras if e not in EXTRAS]
    if unknown:
        raise UsageError(f"unknown --extra {', '.join(unknown)}; choose from {', '.join(EXTRAS)}")
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="scorekit-lambda-") as work:
        root = Path(work)
        model = _copy_model(ref, store, root / STORE_DIR, "sklearn" in extras)
        _copy_tree(ROOT / "scorekit", root / "scorekit")
        (root / "functions").mkdir()
        shutil.copy2(ROOT / "functions" / "aws_lambda.py", root / "functions" / "aws_lambda.py")
        names = LAMBDA_DISTRIBUTIONS + tuple(d for e in extras for d in EXTRAS[e] if d != "boto3")
        for dist in _closure(names):
            _copy_distribution(dist, root)
        files, unzipped = _size(root)
        hint = "leave out --extra, or deploy a container image"
        _refuse_if_over("Lambda package, unzipped", unzipped, LAMBDA_UNZIPPED_LIMIT, hint)
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".{output.name}.partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                archive.write(path, path.relative_to(root).as_posix())
        zipped = partial.stat().st_size
        if zipped > LAMBDA_ZIPPED_LIMIT:
            partial.unlink()
            _refuse_if_over("Lambda zip", zipped, LAMBDA_ZIPPED_LIMIT, hint)
        os.replace(partial, output)
    return PackageReport(output, files, unzipped, zipped, model)


def package_azure(
    ref: str, output: str | os.PathLike[str], store: str | None = None, extras: tuple[str, ...] = ()
) -> PackageReport:
    """A Function App folder for Azure Functions (Linux, Python 3.11), its packages vendored in
    .python_packages/lib/site-packages so it runs as deployed, without a remote build."""
    unknown = [e for e in extras if e not in EXTRAS]
    if unknown:
        raise UsageError(f"unknown --extra {', '.join(unknown)}; choose from {', '.join(EXTRAS)}")
    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise UsageError(f"--output {output} is not empty; name a new or empty directory")
    with tempfile.TemporaryDirectory(prefix="scorekit-azure-") as work:
        root = Path(work) / "app"
        root.mkdir()
        model = _copy_model(ref, store, root / STORE_DIR, "sklearn" in extras)
        _copy_tree(ROOT / "scorekit", root / "scorekit")
        (root / "functions").mkdir()
        shutil.copy2(ROOT / "functions" / "azure_blob.py", root / "functions" / "azure_blob.py")
        for name in ("function_app.py", "host.json"):
            shutil.copy2(ROOT / name, root / name)
        site = root / ".python_packages" / "lib" / "site-packages"
        site.mkdir(parents=True)
        names = AZURE_DISTRIBUTIONS + tuple(d for e in extras for d in EXTRAS[e])
        dists = _closure(names)
        for dist in dists:
            _copy_distribution(dist, site)
        pins = sorted(f"{d.metadata['Name']}=={d.version}" for d in dists)
        (root / "requirements.txt").write_text(
            "# What .python_packages holds (scorekit package azure); the worker provides "
            "azure-functions.\n" + "\n".join(pins) + "\n"
        )
        files, size = _size(root)
        _refuse_if_over("Azure package", size, AZURE_LIMIT, "leave out --extra")
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.exists():
            output.rmdir()
        shutil.move(str(root), output)
    return PackageReport(output, files, size, None, model)
