import math

import numpy as np
import pytest

from nemopose import evaluate


def test_metrics_on_hand_made_errors():
    deg = np.array([1.0, 5.0, 9.0, 11.0, 29.0, 31.0, 90.0])
    m = evaluate.metrics(deg)
    assert m.n == 7
    assert m.acc_pi6 == pytest.approx(100 * 5 / 7)
    assert m.acc_pi18 == pytest.approx(100 * 3 / 7)
    assert m.med_err == pytest.approx(11.0)


def test_thresholds_are_strict():
    m = evaluate.metrics(np.degrees([math.pi / 6, math.pi / 18]))
    assert m.acc_pi6 == pytest.approx(50.0) and m.acc_pi18 == 0.0


def test_weighted_mean_and_pooled_median():
    errs = {"car": np.array([1.0, 2.0, 3.0]), "bus": np.array([40.0]), "aeroplane": np.array([10.0, 50.0])}
    t = evaluate.accuracy_table(errs)
    assert list(t.per_category) == ["aeroplane", "bus", "car"]          # canonical order
    # Mean = image-count weighted mean of per-category values (the original's)
    assert t.mean.acc_pi6 == pytest.approx((50 * 2 + 0 * 1 + 100 * 3) / 6)
    assert t.mean.med_err == pytest.approx((30.0 * 2 + 40.0 * 1 + 2.0 * 3) / 6)
    assert t.pooled_median == pytest.approx(np.median([1, 2, 3, 40, 10, 50]))
    text = evaluate.format_table(t, "title")
    assert "plane" in text and "Mean" in text and "pooled median" in text
    assert text.splitlines()[2].split()[0] == "Pi/6"


def test_rotation_errors_from_poses():
    pred = {"azimuth": [0.1, 1.0], "elevation": [0.2, 0.0], "theta": [0.0, 0.0]}
    gt = {"azimuth": [0.1, 1.0 + math.radians(20)], "elevation": [0.2, 0.0], "theta": [0.0, 0.0]}
    err = evaluate.rotation_errors_deg(pred, gt)
    assert err[0] == pytest.approx(0.0, abs=1e-5)
    assert err[1] == pytest.approx(20.0, abs=1e-6)   # at elevation 0 azimuth is a pure rotation
    bad = evaluate.rotation_errors_deg({"azimuth": [float("nan")], "elevation": [0.0], "theta": [0.0]},
                                       {"azimuth": [0.0], "elevation": [0.0], "theta": [0.0]})
    assert bad[0] == pytest.approx(90.0)


def test_predictions_csv_round_trip(tmp_path):
    rows = [{"category": "car", "occ_level": "", "name": "a", "mesh": 1, "azimuth": 0.1, "elevation": 0.2,
             "theta": 0.0, "distance": 5.0, "loss": 0.9, "gt_azimuth": 0.1, "gt_elevation": 0.2, "gt_theta": 0.0,
             "gt_distance": 5.0, "error_deg": 3.0}]
    evaluate.save_predictions_csv(tmp_path / "p.csv", rows)
    back = evaluate.load_predictions_csv(tmp_path / "p.csv")
    assert back[0]["name"] == "a" and back[0]["error_deg"] == pytest.approx(3.0)
    errs = evaluate.errors_from_rows(back)
    assert errs["car"][0] == pytest.approx(3.0)


def test_summary_table():
    t = evaluate.accuracy_table({"car": np.array([1.0, 50.0])})
    text = evaluate.format_summary({"": t, "FGL1_BGL1": t})
    assert "L0" in text and "FGL1_BGL1" in text


def test_summarize_reads_every_level(tmp_path):
    folder = tmp_path / "Accuracy_single"
    base = {"occ_level": "", "mesh": 1, "azimuth": 0.0, "elevation": 0.0, "theta": 0.0, "distance": 5.0,
            "loss": 0.5, "gt_azimuth": 0.0, "gt_elevation": 0.0, "gt_theta": 0.0, "gt_distance": 5.0}
    evaluate.save_predictions_csv(folder / "predictions_L0.csv",
                                  [dict(base, category="car", name="a", error_deg=3.0),
                                   dict(base, category="bus", name="b", error_deg=40.0)])
    evaluate.save_predictions_csv(folder / "predictions_FGL2_BGL2.csv",
                                  [dict(base, category="car", name="a", error_deg=12.0)])
    evaluate.atomic_write_json(folder / "accuracy_L0.json", {"synthetic": True})
    text = evaluate.summarize(tmp_path, "single")
    assert "SYNTHETIC" in text and "FGL2_BGL2" in text and "FGL1_BGL1" not in text
    assert (folder / "summary.json").is_file()
    last = text.splitlines()[-1].split()
    assert last[0] == "FGL2_BGL2" and float(last[2]) == 100.0 and float(last[3]) == 0.0
