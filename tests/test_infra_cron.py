"""infra/cron: the crontab line and the systemd units run a `scorekit score` command line that
scorekit's own parser accepts, under flock, resuming the night's run."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from scorekit._cli import build_parser

CRON = Path(__file__).resolve().parents[1] / "infra" / "cron"


def scorekit_argv(command: str) -> list[str]:
    """The arguments after the scorekit executable in a shell command line."""
    words = shlex.split(command)
    start = next(i for i, w in enumerate(words) if w.endswith("/bin/scorekit"))
    return words[start + 1 :]


def check_job(command: str) -> None:
    args = build_parser().parse_args(scorekit_argv(command))
    assert args.command == "score" and args.resume and args.run
    assert args.write_back and args.stale_only and args.input_table == "public.applications"


def test_crontab_example_runs_a_resumable_job_under_flock() -> None:
    lines = [
        line
        for line in (CRON / "crontab.example").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(lines) == 1
    fields = lines[0].split(None, 5)
    assert fields[:5] == ["30", "2", "*", "*", "*"]
    assert fields[5].startswith("flock -n ")
    check_job(fields[5].replace("\\%", "%"))


def unit(path: Path) -> dict[str, dict[str, str]]:
    """A systemd unit's sections and keys, continuation lines joined."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current[key.strip()] = value.strip()
    return sections


def test_systemd_service_and_timer() -> None:
    service = unit(CRON / "scorekit-score.service")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["StandardOutput"] == "journal"
    exec_start = service["Service"]["ExecStart"]
    assert exec_start.startswith("/usr/bin/flock -n ")
    script = shlex.split(exec_start)[-1]  # the sh -c script
    check_job(script.replace("%%", "%"))
    timer = unit(CRON / "scorekit-score.timer")
    assert timer["Timer"]["OnCalendar"] == "*-*-* 02:30:00 UTC"
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is not installed")
def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    for name in ("scorekit-score.service", "scorekit-score.timer"):
        shutil.copy(CRON / name, tmp_path / name)
    done = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "scorekit-score.service"),
         str(tmp_path / "scorekit-score.timer")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "", done.stderr
