"""Seed the demo's raw events: data/audit.csv as applications arriving over five days from
2026-11-15, labels a day later (scorekit._pipeline.seed_raw_events). Usage: seed_demo_data.py DSN"""

import datetime as dt
import sys
from pathlib import Path

from scorekit._pipeline import seed_raw_events

FIRST_DAY = dt.date(2026, 11, 15)

if __name__ == "__main__":
    counts = seed_raw_events(
        sys.argv[1], Path(__file__).parents[1] / "data" / "audit.csv", FIRST_DAY
    )
    print(
        f"   {counts['events']} application events and {counts['labels']} labels over "
        f"{counts['days']} days from {FIRST_DAY} in etl.raw_applications and etl.raw_labels"
    )
