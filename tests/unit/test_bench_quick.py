"""bench/run.py --quick still runs end to end and reports every measurement, so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIRED = ("stage_vs_curl_tar", "stage_vs_pacote", "peak_rss_mb", "check_bytes_up_to_date", "launch_overhead_s",
            "extract_vs_tar_median", "delta_bytes_vs_tufup", "delta_apply_vs_tufup", "delta_apply_vs_full_stage",
            "update_delta_vs_full", "update_delta_vs_full_100mbit")
# Measurements of the shell itself: null here means the shell (or the benchmark) broke.
OWN = ("peak_rss_mb", "check_bytes_up_to_date", "launch_overhead_s", "verify_ms_largest", "extract_vs_tar_median",
       "delta_peak_rss_mb", "update_delta_vs_full", "update_delta_vs_full_100mbit")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@pytest.mark.timeout(1800)  # every section, the delta one included, at a size where the ratios hold
def test_bench_quick_reports_every_measurement(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--json", str(out), "--workdir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=1500, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["mode"] == "quick"
    for key in REQUIRED:
        assert key in data, f"{key} missing"
        if data[key] is None:
            reason = data.get(f"{key}_reason")
            assert isinstance(reason, str) and reason, f"{key} is null without a reason"
        else:
            assert _is_number(data[key]), f"{key} = {data[key]!r} is not a number"
    for key in OWN:
        assert _is_number(data.get(key)), f"{key}: {data.get(f'{key}_reason')}"
    stage = data["stage"]
    assert _is_number(stage["ours_s"]), "desktop update itself was not timed"
    # Big enough that fixed costs do not dominate the ratios, measured over >= 5 interleaved rounds.
    assert stage["archive_mb"] >= 50 and stage["files"] >= 5000
    assert len(stage["ours_samples_s"]) >= 5
    if data["stage_vs_curl_tar"] is not None:
        assert len(stage["stage_vs_curl_tar_ratios"]) == len(stage["ours_samples_s"])
    assert data["filesystem"]["description"], "the report does not say which file system it measured"
    if os.geteuid() == 0:
        assert data["filesystem"]["loop_image"] and data["filesystem"]["journaled"] is True
        assert str(tmp_path) not in Path("/proc/mounts").read_text(), "the loop image was left mounted"
    assert data["check_round_trips_up_to_date"] == 1
    assert data["delta_tree_identical"] is True, "the tree rebuilt from the delta differs from the release"
    assert data["table"], "no table rows"
