"""Bytecode written ahead of time, where the process that imports the code can't write it: the
database server's OS user in the checkout (scorekit db install), a function's read-only package
(scorekit package). Without it each such process compiles every module from source on import."""

from __future__ import annotations

import py_compile
import sys
from pathlib import Path


def write_bytecode(root: Path, unchecked: bool = False) -> None:
    """Compile every module under ``root`` into the __pycache__ beside it, where the import
    system looks whatever this interpreter's PYTHONPYCACHEPREFIX or -O, for this interpreter's
    version. Checked against the source's mtime and size by default, as pip writes it;
    ``unchecked``: never checked against the source, so valid however the files' mtimes move
    (zips and their extraction change them), for a package that is built once and not edited.
    Sources that don't compile, as in some libraries' templates, are left to the import system.
    Raises OSError where it can't write."""
    mode = (
        py_compile.PycInvalidationMode.UNCHECKED_HASH
        if unchecked
        else py_compile.PycInvalidationMode.TIMESTAMP
    )
    tag = sys.implementation.cache_tag
    for source in sorted(root.rglob("*.py")):
        try:
            py_compile.compile(
                str(source),
                cfile=str(source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"),
                doraise=True,
                optimize=0,
                invalidation_mode=mode,
            )
        except py_compile.PyCompileError:
            continue
