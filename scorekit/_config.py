"""Settings read from the environment, and what `make setup` recorded."""

from __future__ import annotations

import functools
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from ._errors import UsageError

DSN_FILE = "scorekit.dsn"  # written into the virtualenv by scripts/setup.sh
FALLBACK_DSN = "postgresql:///scorekit"


def database_url() -> str:
    """The PostgreSQL DSN: $SCOREKIT_DSN, else the one setup recorded, else the local default."""
    dsn = os.environ.get("SCOREKIT_DSN")
    if dsn:
        return dsn
    recorded = Path(sys.prefix) / DSN_FILE
    if recorded.is_file():
        text = recorded.read_text().strip()
        if text:
            return text
    return FALLBACK_DSN


@functools.cache
def file_mode() -> int:
    """The mode a new file gets under this process's umask (0666 & ~umask)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0o022)  # elsewhere: read it by setting it (not thread-safe, done once)
    os.umask(umask)
    return 0o666 & ~umask


def env_number(environ: Mapping[str, str], name: str, default: float) -> float:
    """A setting that is a finite number of 0 or more; ``default`` when unset or empty."""
    text = environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise UsageError(f"{name} must be a number of 0 or more, got {text!r}")
    return value
