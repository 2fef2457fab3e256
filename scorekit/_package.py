"""`scorekit package lambda | azure`: deployment packages with only what scoring needs.

A package holds scorekit itself, numpy, the adapter for the platform, and one model version as a
store of its own under ``pmml/`` (the store scorekit reads when SCOREKIT_STORE is unset), with
that version as champion. The libraries are installed by pip for the platform, not copied from
this machine: wheels for CPython 3.11 on x86_64 Linux with a glibc no newer than the platform's
(AWS Lambda's python3.11 runtime runs on Amazon Linux 2, glibc 2.26; Azure Functions' Python
3.11 image on Debian 11, glibc 2.31). So the Lambda package takes numpy 2.2.6, the newest numpy
with wheels for glibc 2.17. scikit-learn, scipy, pandas, pypmml and the JVM are left out unless
asked for (``extras=("sklearn",)`` adds what the sklearn engine needs, and the pickle).

The sizes are printed, and a package over its platform's limit is refused before it is written:
AWS Lambda takes 250 MiB unzipped (a zip over 50 MiB must be deployed from S3, as the template
does, which the report says); for Azure, whose limits depend on the plan, scorekit stops at
1 GiB of its own accord.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from ._bundle import MANIFEST_FILE, PICKLE_FILE, PMML_FILE
from ._bytecode import write_bytecode
from ._errors import UsageError
from ._loading import looks_like_path, parse_ref
from ._store import ModelStore, open_store

MIB = 1024 * 1024
LAMBDA_DIRECT_UPLOAD_LIMIT = 50 * MIB
LAMBDA_UNZIPPED_LIMIT = 250 * MIB
AZURE_LIMIT = 1024 * MIB
ROOT = Path(__file__).resolve().parents[1]
STORE_DIR = "pmml"
PYTHON = "3.11"
# The platform tags pip may pick wheels from: x86_64 Linux, glibc up to the platform's.
LAMBDA_PLATFORMS = (  # Amazon Linux 2: glibc 2.26
    *(f"manylinux_2_{minor}_x86_64" for minor in (26, 24, 17)),
    "manylinux2014_x86_64",
)
AZURE_PLATFORMS = (  # Debian 11: glibc 2.31
    *(f"manylinux_2_{minor}_x86_64" for minor in (31, 28, 27, 24, 17)),
    "manylinux2014_x86_64",
)
LAMBDA_REQUIREMENTS = ("numpy==2.2.6",)
AZURE_REQUIREMENTS = (
    "numpy==2.4.6",
    "azure-storage-blob==12.31.1",
)  # the worker brings azure-functions
EXTRAS = ("sklearn", "s3")


def _extra_requirements(extras: tuple[str, ...], platform: str) -> list[str]:
    unknown = [e for e in extras if e not in EXTRAS]
    if unknown:
        raise UsageError(f"unknown --extra {', '.join(unknown)}; choose from {', '.join(EXTRAS)}")
    found = []
    if "sklearn" in extras:  # the pickle needs the scikit-learn that made it
        found += [f"scikit-learn=={metadata.version('scikit-learn')}", "pandas"]
    if "s3" in extras and platform == "azure":  # Lambda's runtime has boto3 already
        found.append(f"boto3=={metadata.version('boto3')}")
    return found


def _pip_install(target: Path, requirements: list[str], platforms: tuple[str, ...]) -> None:
    """Install wheels for the platform into ``target`` (no scripts, no bytecode, no tests)."""
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
            "--target", str(target), "--only-binary=:all:", "--no-compile",
            "--python-version", PYTHON, "--implementation", "cp"]  # fmt: skip
    for platform in platforms:
        argv += ["--platform", platform]
    done = subprocess.run([*argv, *requirements], capture_output=True, text=True)
    if done.returncode != 0:
        problem = [ln for ln in done.stderr.splitlines() if ln.startswith("ERROR")] or [done.stderr]
        raise UsageError(
            f"pip could not install {' '.join(requirements)} for CPython {PYTHON} on "
            f"{platforms[0]}: {' '.join(problem)[-600:]}"
        )
    shutil.rmtree(target / "bin", ignore_errors=True)
    for tests in [p for p in target.rglob("tests") if p.is_dir()]:
        shutil.rmtree(tests, ignore_errors=True)


@dataclass
class PackageReport:
    path: Path
    files: int
    unzipped_bytes: int
    zipped_bytes: int | None
    model: str
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        size = f"{self.unzipped_bytes / MIB:.1f} MiB unzipped"
        if self.zipped_bytes is not None:
            size = f"{self.zipped_bytes / MIB:.1f} MiB zipped, " + size
        return [f"{self.path}: {self.files} files, {size}, model {self.model}", *self.notes]


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


def _bytecode(root: Path) -> list[str]:
    """Write the package's bytecode (scorekit, the adapter, the libraries), which a function
    can't write on its read-only file system: without it each cold start compiles them all from
    source (docs/deploy.md has the figures). Unchecked, since the zip and its extraction move
    the files' mtimes. It must come from the platform's Python version: a note where this one
    differs."""
    here = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if here != PYTHON:
        return [
            f"note: no bytecode in the package: this Python is {here} and the platform's "
            f"{PYTHON}, so each cold start compiles the modules from source"
        ]
    write_bytecode(root, unchecked=True)
    return []


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
    requirements = [*LAMBDA_REQUIREMENTS, *_extra_requirements(extras, "lambda")]
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="scorekit-lambda-") as work:
        root = Path(work)
        model = _copy_model(ref, store, root / STORE_DIR, "sklearn" in extras)
        _copy_tree(ROOT / "scorekit", root / "scorekit")
        (root / "functions").mkdir()
        shutil.copy2(ROOT / "functions" / "aws_lambda.py", root / "functions" / "aws_lambda.py")
        _pip_install(root, requirements, LAMBDA_PLATFORMS)
        notes = _bytecode(root)
        files, unzipped = _size(root)
        _refuse_if_over(
            "Lambda package, unzipped", unzipped, LAMBDA_UNZIPPED_LIMIT,
            "leave out --extra, or deploy a container image",
        )  # fmt: skip
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(f".{output.name}.partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                entry = zipfile.ZipInfo.from_file(path, path.relative_to(root).as_posix())
                entry.external_attr = 0o644 << 16  # readable by Lambda's user, whatever the umask
                entry.compress_type = zipfile.ZIP_DEFLATED
                with open(path, "rb") as f:
                    archive.writestr(entry, f.read(), compresslevel=9)
        zipped = partial.stat().st_size
        os.replace(partial, output)
    if zipped > LAMBDA_DIRECT_UPLOAD_LIMIT:
        notes.append(
            f"note: over {LAMBDA_DIRECT_UPLOAD_LIMIT // MIB} MiB zipped, so it can't be uploaded "
            "to Lambda directly: deploy it from S3 (infra/aws/template.yaml does)"
        )
    return PackageReport(output, files, unzipped, zipped, model, notes)


def package_azure(
    ref: str, output: str | os.PathLike[str], store: str | None = None, extras: tuple[str, ...] = ()
) -> PackageReport:
    """A Function App folder for Azure Functions (Linux, Python 3.11), its packages vendored in
    .python_packages/lib/site-packages so it runs as deployed, without a remote build."""
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
        requirements = [*AZURE_REQUIREMENTS, *_extra_requirements(extras, "azure")]
        _pip_install(site, requirements, AZURE_PLATFORMS)
        notes = _bytecode(root)
        (root / "requirements.txt").write_text(
            "# What .python_packages holds (scorekit package azure); the worker provides "
            "azure-functions.\n" + "\n".join(requirements) + "\n"
        )
        files, size = _size(root)
        _refuse_if_over("Azure package", size, AZURE_LIMIT, "leave out --extra")
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.exists():
            output.rmdir()
        shutil.move(str(root), output)
    return PackageReport(output, files, size, None, model, notes)
