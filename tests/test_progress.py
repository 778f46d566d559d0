"""Progress in a log file: whole lines (no carriage returns, no blank lines), one per further
10 % or per 30 s, quiet for short loops; a tqdm bar only on a terminal."""

import io
import re

from nemopose.cli import progress as P


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def run(n_items, seconds_each, total=True, **kwargs):
    out, clock = io.StringIO(), Clock()
    items = range(n_items) if total else (i for i in range(n_items))
    bar = P.LineProgress(items, desc="train car", file=out, clock=clock, **kwargs)
    for _ in bar:
        clock.t += seconds_each
        bar.set_postfix(loss="0.5")
    return out.getvalue()


def percents(text):
    return [int(m) for m in re.findall(r"train car: (\d+)%", text)]


def test_a_line_every_ten_percent_and_no_blank_lines():
    text = run(100, 1.0)
    assert "\r" not in text and all(line.strip() for line in text.splitlines())
    assert percents(text) == [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
    assert len(set(text.splitlines())) == len(text.splitlines())          # no line twice
    assert text.splitlines()[-1].split(" progress ")[1] == "train car: 100% (100/100) done in 1 min 40 s, loss=0.5"


def test_short_loops_stay_quiet():
    assert percents(run(100, 0.001)) == [100]               # one closing line
    assert run(100, 0.001, leave=False) == ""              # a transient bar: nothing
    assert run(100, 0.001, disable=True) == ""


def test_a_line_every_thirty_seconds_without_a_total():
    text = run(4, 40.0, total=False, leave=False)
    lines = text.splitlines()
    assert len(lines) == 5 and all(" progress train car: " in line for line in lines)
    assert "done in 2 min 40 s" in lines[-1]
    # a transient bar that printed during a long loop still ends its report
    assert run(40, 10.0, leave=False).count("done in") == 1


def test_bytes_and_manual_updates():
    out, clock = io.StringIO(), Clock()
    with P.LineProgress(desc="a.zip", unit="B", unit_scale=True, unit_divisor=1024, file=out, clock=clock) as bar:
        bar.reset(total=10 * 2 ** 20)
        for _ in range(10):
            clock.t += 5
            bar.update(2 ** 20)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("a.zip: 10% (1.00MB/10.0MB) 5 s") and lines[-1].endswith("done in 50 s")


def test_tqdm_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    from tqdm import tqdm

    assert isinstance(P.progress_bar(range(3), file=Terminal()), tqdm)
    assert isinstance(P.progress_bar(range(3), file=io.StringIO()), P.LineProgress)
    assert list(P.progress_bar(range(3), file=io.StringIO(), leave=False)) == [0, 1, 2]
