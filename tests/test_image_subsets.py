"""NeMo's Image_subsets/*.pkl come from a download: they are read by a restricted unpickler
that admits lists, tuples and strings only. A tampered file is refused with its name, and
nothing in it runs."""

import os
import pickle

import pytest

from nemopose import cli
from nemopose.data import pascal3d
from nemopose.data.pascal3d import Pascal3DRelease, UnsafePickleError, load_string_lists


class RunsACommand:
    """Unpickling this with pickle.load runs a shell command (the attack)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write(path, payload: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def test_a_pickle_that_runs_a_command_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "command_ran"
    payload = pickle.dumps([["n01"], RunsACommand(marker)])
    # the attack is real: plain pickle.load would run it
    pickle.loads(pickle.dumps(RunsACommand(tmp_path / "control")))
    assert (tmp_path / "control").exists()
    release = Pascal3DRelease(tmp_path / "release")
    path = write(release.image_subsets_path("car", "train"), payload)
    with pytest.raises(UnsafePickleError) as info:
        release.image_subsets("car", "train")
    assert str(path) in str(info.value) and "system" in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
def test_objects_numbers_and_other_shapes_are_refused(tmp_path, protocol):
    import collections
    cases = {
        "object": [collections.OrderedDict(a=["x"])],
        "eval": pickle.dumps(eval, protocol=protocol),
        "number": [[1, 2]],
        "dict": {"a": ["x"]},
        "flat": ["a", "b"],
        "bytes": [[b"a"]],
    }
    for name, value in cases.items():
        payload = value if isinstance(value, bytes) else pickle.dumps(value, protocol=protocol)
        path = write(tmp_path / f"{name}.pkl", payload)
        with pytest.raises(UnsafePickleError, match=str(path)):
            load_string_lists(path)
    with pytest.raises(UnsafePickleError, match="junk.pkl"):
        load_string_lists(write(tmp_path / "junk.pkl", b"not a pickle"))


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_lists_tuples_and_strings_are_read(tmp_path, protocol):
    groups = [["n01_1", "n02_2"], ("n03_3",), []]
    path = write(tmp_path / "ok.pkl", pickle.dumps(groups, protocol=protocol))
    assert load_string_lists(path) == [["n01_1", "n02_2"], ["n03_3"], []]


def test_a_python2_pickle_naming_builtin_list_is_read(tmp_path):
    # protocol 0 as Python 2 wrote it: [tuple(('a_1', 'b_2'))] through __builtin__.tuple
    payload = b"(lp0\nc__builtin__\ntuple\np1\n((S'a_1'\nS'b_2'\ntp2\ntp3\nRp4\na."
    assert load_string_lists(write(tmp_path / "py2.pkl", payload)) == [["a_1", "b_2"]]


def test_the_refusal_is_one_clean_error_line(tmp_path, capsys):
    path = write(tmp_path / "bad.pkl", pickle.dumps([[RunsACommand(tmp_path / "m")]]))

    def main(argv):
        load_string_lists(path)

    assert cli.run(main, []) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(path) in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()
    assert isinstance(pascal3d.UnsafePickleError("x"), ValueError)
