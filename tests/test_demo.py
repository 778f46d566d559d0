"""The demo (code/demo.sh): DEMO_SEED reaches the data generation and the training, each seed
gets its own folders, and its results are checked against ranges (the spread over seeds and
machines), never against one table.

The full demo takes about 10 minutes on 2 CPU cores, so it runs only when asked:
    NEMOPOSE_RUN_DEMO=1 DEMO_SEED=1 pytest tests/test_demo.py           # run it, then check
    NEMOPOSE_DEMO_EXPROOT=exp/synthetic_demo pytest tests/test_demo.py  # check a finished run
"""

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# What the demo's summary must show, per level: (low, high) for ACC@pi/6 and ACC@pi/18 (%)
# and the largest MedErr (degrees). Provisional: they hold the README's table and another
# machine's (same commit, torch 2.14.1: L0 Pi/18 89.2, FGL1 55.8, FGL3 15.0) with a margin;
# to be narrowed to the spread measured over DEMO_SEED 0, 1, 2 (see the README).
DEMO_RANGES = {
    "L0":        {"acc_pi6": (95.0, 100.0), "acc_pi18": (80.0, 100.0), "med_err": 6.0},
    "FGL1_BGL1": {"acc_pi6": (70.0, 95.0), "acc_pi18": (45.0, 70.0), "med_err": 13.0},
    "FGL2_BGL2": {"acc_pi6": (50.0, 85.0), "acc_pi18": (25.0, 50.0), "med_err": 25.0},
    "FGL3_BGL3": {"acc_pi6": (35.0, 70.0), "acc_pi18": (10.0, 35.0), "med_err": 45.0},
}
README_TABLE = {"L0": (99.2, 92.5, 3.9), "FGL1_BGL1": (82.5, 58.3, 8.7), "FGL2_BGL2": (65.8, 35.8, 16.5),
                "FGL3_BGL3": (51.7, 24.2, 30.3)}


def out_of_range(levels: dict) -> list[str]:
    """What in a demo summary (``summary.json``'s ``levels``) falls outside DEMO_RANGES, and
    whether accuracy falls with occlusion as it must."""
    problems = []
    for level, ranges in DEMO_RANGES.items():
        if level not in levels:
            problems.append(f"{level}: missing")
            continue
        mean = levels[level]["mean"]
        for key in ("acc_pi6", "acc_pi18"):
            low, high = ranges[key]
            if not low <= mean[key] <= high:
                problems.append(f"{level} {key} {mean[key]:.1f} outside [{low}, {high}]")
        if not mean["med_err"] <= ranges["med_err"]:
            problems.append(f"{level} med_err {mean['med_err']:.1f} > {ranges['med_err']}")
    pi18 = [levels[lv]["mean"]["acc_pi18"] for lv in DEMO_RANGES if lv in levels]
    if pi18 != sorted(pi18, reverse=True):
        problems.append(f"Pi/18 does not fall with occlusion: {pi18}")
    return problems


def as_levels(table: dict) -> dict:
    return {lv: {"mean": {"acc_pi6": a, "acc_pi18": b, "med_err": m}} for lv, (a, b, m) in table.items()}


def test_the_ranges_hold_the_known_tables_and_catch_a_broken_one():
    assert out_of_range(as_levels(README_TABLE)) == []
    other = dict(README_TABLE, L0=(99.2, 89.2, 3.9), FGL1_BGL1=(82.5, 55.8, 8.7), FGL3_BGL3=(51.7, 15.0, 30.3))
    assert out_of_range(as_levels(other)) == []
    broken = dict(README_TABLE, L0=(60.0, 20.0, 25.0))              # e.g. an untrained network
    assert len(out_of_range(as_levels(broken))) >= 3
    flipped = dict(README_TABLE, FGL3_BGL3=(51.7, 34.0, 30.3), FGL2_BGL2=(65.8, 30.0, 16.5))
    assert any("does not fall" in p for p in out_of_range(as_levels(flipped)))


def run_demo_with_a_recording_python(tmp_path, **env):
    """code/demo.sh with NEMOPOSE_PYTHON = a script that records its arguments (nothing runs)."""
    record = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/usr/bin/env bash\necho "$*" >> {record}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    clean = {k: v for k, v in os.environ.items() if k not in ("DATAROOT", "EXPROOT", "SEED", "DEMO_SEED",
                                                               "DEMO_CATEGORIES")}
    out = subprocess.run(["bash", str(REPO / "code" / "demo.sh")], env={**clean, "NEMOPOSE_PYTHON": str(fake), **env},
                         capture_output=True, text=True, timeout=120)
    calls = record.read_text().splitlines() if record.exists() else []
    return out, {c.split()[1]: c for c in calls if c.startswith("-m ")}, calls


def test_demo_seed_reaches_the_data_and_the_training(tmp_path):
    out, by_tool, calls = run_demo_with_a_recording_python(tmp_path, DEMO_SEED="3")
    assert out.returncode == 0, out.stderr
    prepare, train = by_tool["nemopose.data.prepare"], by_tool["nemopose.train"]
    assert "--seed 3 " in prepare + " " and "--dataroot ./data/synthetic_demo_seed3 " in prepare
    assert "--seed 3 " in train + " " and "--exproot ./exp/synthetic_demo_seed3 " in train
    assert sum("nemopose.inference" in c for c in calls) == 4
    assert "--exproot ./exp/synthetic_demo_seed3 " in by_tool["nemopose.evaluate"] + " "
    assert "--summary-only" in by_tool["nemopose.evaluate"]           # the tables are printed once
    # seed 0 (the default): the usual folders, the usual seeds
    (tmp_path / "zero").mkdir()
    out, by_tool, _ = run_demo_with_a_recording_python(tmp_path / "zero")
    assert out.returncode == 0
    assert "--seed 0" in by_tool["nemopose.data.prepare"] and "--seed 0" in by_tool["nemopose.train"]
    assert "--dataroot ./data/synthetic_demo " in by_tool["nemopose.data.prepare"] + " "


def test_a_bad_demo_seed_is_refused(tmp_path):
    out, _, calls = run_demo_with_a_recording_python(tmp_path, DEMO_SEED="one")
    assert out.returncode == 2 and "DEMO_SEED" in out.stderr and calls == []


@pytest.mark.slow
@pytest.mark.skipif(not (os.environ.get("NEMOPOSE_RUN_DEMO") or os.environ.get("NEMOPOSE_DEMO_EXPROOT")),
                    reason="the full demo takes ~10 min: NEMOPOSE_RUN_DEMO=1 or NEMOPOSE_DEMO_EXPROOT=<its exproot>")
def test_the_demo_lands_in_its_ranges(tmp_path):
    exproot = os.environ.get("NEMOPOSE_DEMO_EXPROOT")
    if not exproot:
        exproot = tmp_path / "exp"
        env = dict(os.environ, DATAROOT=str(tmp_path / "data"), EXPROOT=str(exproot))
        subprocess.run(["bash", str(REPO / "code" / "demo.sh")], env=env, check=True, timeout=3600)
    summary = json.loads((Path(exproot) / "Accuracy_single" / "summary.json").read_text())
    assert summary["synthetic"] is True
    assert out_of_range(summary["levels"]) == []
