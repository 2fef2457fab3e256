"""Settings read from the environment, and what `make setup` recorded."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
