#!/usr/bin/env python3
"""Does the test suite fail when the product breaks? Each breakage below is made in a fresh
copy of the working tree (tracked and untracked, not ignored, files), then the tests that
should catch it run there. One line per breakage: "caught" when those tests fail, "NOT
caught" when they pass, "error" when the breakage no longer applies (its code changed: update
the table) or pytest could not run. Exit status 1 unless every breakage is caught.

    python .ci/breakages.py              # all breakages (about 10 minutes on 2 cores)
    python .ci/breakages.py -k triton    # those whose name contains "triton"
    python .ci/breakages.py --list
    python .ci/breakages.py --every-test # name every test that catches each (slower)

The demo-trained car (tests/conftest.py, demo_car) is trained once, in an unbroken copy, and
reused by the breakages that do not touch training (NEMOPOSE_TEST_DEMO_CAR); a breakage of
training retrains it.

Add a row when a test is written for a new way to break the product.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Breakage:
    name: str
    file: str                 # relative to the repository root
    old: str                  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]    # pytest arguments (files, -k expressions)
    touches_training: bool = False


BREAKAGES = [
    Breakage("the predictor returns a constant pose", "code/nemopose/predict.py",
             "azimuth=sol.azimuth, elevation=sol.elevation, theta=sol.theta,",
             "azimuth=1.0, elevation=0.2, theta=0.0,",
             ("tests/test_predict.py", "tests/test_photo.py")),
    Breakage("the predictor skips the Adam steps (initial grid only)", "code/nemopose/predict.py",
             "self.solver_config = replace(solver or SolverConfig(), optimize_translation=False,",
             "self.solver_config = replace(solver or SolverConfig(), steps=0, optimize_translation=False,",
             ("tests/test_predict.py",)),
    Breakage("the presence score has no rival explanation", "code/nemopose/photo/presence.py",
             "score = object_fit - torch.maximum(clutter_fit, single_vertex_fit)", "score = object_fit",
             ("tests/test_photo.py", "-k", "rivals or no_object")),
    Breakage("whole photos are padded with black (a flat photo becomes a box)", "code/nemopose/predict.py",
             'place_image(array, self.crop_size, rate, pad="edge")', "place_image(array, self.crop_size, rate)",
             ("tests/test_photo.py", "-k", "no_object")),
    Breakage("the second crop of a box ignores the training objects' origin offsets", "code/nemopose/predict.py",
             "origin = np.asarray(job.box.center) + self.object_sizes.origin_offset(p.azimuth, p.elevation, job.box)",
             "origin = np.asarray(job.box.center)",
             ("tests/test_photo.py", "-k", "boxes_match")),
    Breakage("every box is cropped at scale 1", "code/nemopose/predict.py",
             "rate = scale if scale is not None else self.object_sizes.scale_for(box)", "rate = 1.0",
             ("tests/test_photo.py", "-k", "boxes_match or several")),
    Breakage("a whole photo is tried at one scale only", "code/nemopose/predict.py",
             "for factor in ((1.0,) if scale is not None else WHOLE_IMAGE_SCALES):", "for factor in (1.0,):",
             ("tests/test_photo.py", "-k", "whole_photos")),
    Breakage("the inference pipeline writes a constant pose for every image", "code/nemopose/inference.py",
             '    angles = ("azimuth", "elevation", "theta")\n    errors = evaluate.rotation_errors_deg(',
             '    angles = ("azimuth", "elevation", "theta")\n'
             '    solutions = [replace(s, azimuth=1.0, elevation=0.2, theta=0.0) for s in solutions]\n'
             '    errors = evaluate.rotation_errors_deg(',
             ("tests/test_inference.py", "tests/test_real_users.py")),
    Breakage("the downloader never sends Range", "code/nemopose/fetch/download.py",
             'headers["Range"] = f"bytes={have}-"', "pass",
             ("tests/test_download.py",)),
    Breakage("a complete .part file is thrown away and downloaded again", "code/nemopose/fetch/download.py",
             "if total == have:  # the .part was already complete", "if False:",
             ("tests/test_download.py",)),
    Breakage("the Triton no-gradient variant returns zeros", "code/nemopose/solve/score_triton.py",
             "        return partial.sum(1)\n",
             "        return partial.sum(1) if grad else torch.zeros_like(partial.sum(1))\n",
             ("tests/test_score_triton.py",)),
    Breakage("the Triton y-gradient is multiplied by 1.5", "code/nemopose/solve/score_triton.py",
             "return gx * scale, gy * scale,", "return gx * scale, gy * scale * 1.5,",
             ("tests/test_score_triton.py",)),
    Breakage("optimizer.step() is removed from training", "code/nemopose/train/loop.py",
             "            run.optimizer.step()\n", "            pass\n",
             ("tests/test_train.py", "tests/test_train_integration.py"), touches_training=True),
]


def copy_tree(dest: Path) -> None:
    """The working tree's files (tracked and untracked, not ignored) into ``dest``."""
    listed = subprocess.run(["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
                            check=True, capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def run_pytest(root: Path, args: tuple[str, ...], env: dict[str, str], log: Path, first_only: bool) -> int:
    cmd = [sys.executable, "-m", "pytest", *(["-x"] if first_only else []), "-q", "-p", "no:cacheprovider", *args]
    with open(log, "w") as fh:
        return subprocess.run(cmd, cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-k", default="", help="only breakages whose name contains this (default: all)")
    p.add_argument("--list", action="store_true", help="list the breakages and their tests, then stop")
    p.add_argument("--keep", action="store_true", help="keep the copies and pytest logs (default: removed)")
    p.add_argument("--every-test", action="store_true",
                   help="run all the listed tests and name every one that fails (default: stop at the first)")
    args = p.parse_args(argv)
    chosen = [b for b in BREAKAGES if args.k.lower() in b.name.lower()]
    if args.list:
        for b in chosen:
            print(f"{b.name}: {b.file} -> {' '.join(b.tests)}")
        return 0

    work = Path(tempfile.mkdtemp(prefix="nemopose-breakages-"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "CI")}
    # trained by the first run that needs it (or given: a folder of an earlier run of this script)
    env.setdefault("NEMOPOSE_TEST_DEMO_CAR", str(work / "demo_car"))
    rows = []
    for i, b in enumerate(chosen):
        root = work / f"copy{i}"
        copy_tree(root)
        path = root / b.file
        text = path.read_text()
        start = time.time()
        if text.count(b.old) != 1:
            rows.append((b.name, f"error: the code to break occurs {text.count(b.old)} times in {b.file}", 0.0))
            continue
        path.write_text(text.replace(b.old, b.new))
        run_env = dict(env)
        if b.touches_training:       # the shared trained car would hide this breakage
            run_env.pop("NEMOPOSE_TEST_DEMO_CAR")
        log = work / f"breakage{i}.log"
        rc = run_pytest(root, b.tests, run_env, log, first_only=not args.every_test)
        verdict = {0: "NOT caught", 1: "caught"}.get(rc, f"error: pytest exit {rc} (see {log})")
        if rc == 1:
            failed = [line.split(" - ")[0].removeprefix("FAILED ") for line in log.read_text().splitlines()
                      if line.startswith("FAILED ")]
            verdict += f" by {', '.join(failed) or 'a failing test'}"
        rows.append((b.name, verdict, time.time() - start))
        print(f"[{i + 1}/{len(chosen)}] {b.name}: {verdict}", file=sys.stderr, flush=True)
        if not args.keep:
            shutil.rmtree(root)

    width = max(len(name) for name, _, _ in rows)
    print(f"{'breakage':<{width}}  {'seconds':>7}  result")
    for name, verdict, seconds in rows:
        print(f"{name:<{width}}  {seconds:7.0f}  {verdict}")
    ok = all(v.startswith("caught") for _, v, _ in rows)
    if ok and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"pytest logs kept in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
