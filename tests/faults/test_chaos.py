"""``wsproto-trio chaos`` as CI runs it: 20 s of faults, and every accepted message
delivered once, in order, with recovery on (issue 13's target)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import trio

CHAOS_DEADLINE = 120.0


async def test_a_short_chaos_run_delivers_everything(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "wsproto_trio.cli", "chaos", "--seconds", "20",
        "--clients", "20", "--json", str(report_path), "--workdir", str(tmp_path / "logs"),
    ]  # fmt: skip
    with trio.fail_after(CHAOS_DEADLINE):
        done = await trio.run_process(
            command, capture_stdout=True, stderr=subprocess.STDOUT, check=False
        )
    output = done.stdout.decode(errors="replace")
    assert done.returncode == 0, output
    lines = output.strip().splitlines()
    print(output)  # the report, for the CI log
    assert lines[-1].startswith("chaos: delivered "), output
    report = json.loads(report_path.read_text())
    assert lines[-1] == (
        f"chaos: delivered {report['delivered']}/{report['expected']} (100.00%), "
        "duplicates 0, reordered 0"
    ), output
    assert report["expected"] > 1000 and report["accepted"] > 100, report
    assert {f["fault"] for f in report["faults"]} >= {
        "client links cut", "kill -9 s0", "s1 Redis link cut", "Redis restart",
    }, report  # fmt: skip
    assert report["recoveries"] > 0 and report["ghost_presence_s"] is not None, report
