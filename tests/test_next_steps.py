"""Errors name the next command that works: the whole chain when several steps are missing
(prepare, then train, then infer), the categories that are prepared, and the demo's folders
when that is where the checkpoints are."""

import json
import re

import pytest

from nemopose import cli, evaluate, inference
from nemopose.cli import next_steps
from nemopose.experiment import CheckpointNotFound, Experiment
from nemopose.train import loop as train_loop


def error_line(main, argv, capsys) -> str:
    assert cli.run(main, argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def order_of(text, *needles):
    positions = [text.find(n) for n in needles]
    assert all(p >= 0 for p in positions), (needles, text)
    return positions == sorted(positions)


def test_inference_on_a_fresh_clone_names_prepare_train_and_infer(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = error_line(inference.main, ["--device", "cpu"], capsys)
    assert order_of(line, "run ./PrepareData.sh", ", then ./TrainNeMo.sh", ", then ./InferenceNeMo.sh")
    # one category asked for, at an occlusion level: the same chain for it, ending at that level
    line = error_line(inference.main, ["--device", "cpu", "--categories", "bus", "--occ-level", "FGL2_BGL2"], capsys)
    assert order_of(line, "CATEGORIES=bus ./PrepareData.sh", "CATEGORIES=bus ./TrainNeMo.sh",
                    "CATEGORIES=bus ./InferenceNeMo.sh FGL2_BGL2")


def test_training_without_data_names_the_chain_with_the_users_folders(tmp_path, capsys):
    data, exp = tmp_path / "d", tmp_path / "e"
    line = error_line(train_loop.main, ["--dataroot", str(data), "--exproot", str(exp), "--device", "cpu"], capsys)
    assert order_of(line, f"DATAROOT={data} ./PrepareData.sh",
                    f"DATAROOT={data} EXPROOT={exp} ./TrainNeMo.sh", f"DATAROOT={data} EXPROOT={exp} ./InferenceNeMo.sh")


def test_an_unprepared_category_lists_the_prepared_ones_and_how_to_prepare_it(tiny_dataroot, tmp_path, capsys):
    from conftest import TINY_CATEGORIES

    line = error_line(train_loop.main, ["--dataroot", str(tiny_dataroot), "--exproot", str(tmp_path),
                                        "--categories", "sofa", "--device", "cpu"], capsys)
    prepared = re.search(r"prepared in \S+ \(train, single cuboid\): ([a-z, ]+);", line)
    assert prepared and prepared.group(1).split(", ") == [c for c in next_steps.layout.constants.CATEGORIES
                                                          if c in TINY_CATEGORIES]
    # the synthetic data root is extended with its own size (other settings would be refused)
    assert order_of(line, f"DATAROOT={tiny_dataroot} CATEGORIES=sofa SYNTHETIC=yes SYNTHETIC_SIZE=tiny ./PrepareData.sh",
                    "CATEGORIES=sofa ./TrainNeMo.sh", "CATEGORIES=sofa ./InferenceNeMo.sh")


@pytest.fixture
def after_the_demo(tmp_path, monkeypatch):
    """A working folder after code/demo.sh: checkpoints in exp/synthetic_demo, trained on
    data/synthetic_demo; the tools' defaults (exp, data) hold nothing."""
    monkeypatch.chdir(tmp_path)
    ckpts = tmp_path / "exp" / "synthetic_demo" / "NeMo_single"
    ckpts.mkdir(parents=True)
    (ckpts / "saved_model_car_09.pth").write_bytes(b"")
    (ckpts / "config_car.json").write_text(json.dumps({"dataroot": "./data/synthetic_demo"}))
    (tmp_path / "data" / "synthetic_demo").mkdir(parents=True)
    return tmp_path


def test_after_the_demo_the_errors_point_at_its_folders(after_the_demo, capsys):
    line = error_line(inference.main, ["--device", "cpu"], capsys)
    assert "the demo's checkpoints are in exp/synthetic_demo (trained on data/synthetic_demo): " \
           "EXPROOT=exp/synthetic_demo DATAROOT=data/synthetic_demo ./InferenceNeMo.sh" in line
    with pytest.raises(CheckpointNotFound, match="add --exproot exp/synthetic_demo --dataroot data/synthetic_demo"):
        Experiment("exp", "single").final_checkpoint("car")
    line = error_line(evaluate.main, [], capsys)
    assert "add --exproot exp/synthetic_demo" in line and "--dataroot" not in line
    # pointed at the demo's own folder, no hint about itself
    assert next_steps.demo_hint("exp/synthetic_demo") == ""


def test_no_demo_no_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(next_steps, "REPO", tmp_path)
    assert next_steps.demo_hint("exp") == ""
    with pytest.raises(CheckpointNotFound) as info:
        Experiment("exp", "single").final_checkpoint("car")
    assert "demo" not in str(info.value) and "CATEGORIES=car ./TrainNeMo.sh" in str(info.value)
