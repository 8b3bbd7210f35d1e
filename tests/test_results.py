"""bnlib.results: reproduce over seeds, aggregate with 95% intervals, store, load."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from bnlib import results
from bnlib.__main__ import main


def test_ci95_is_the_student_t_half_width():
    x = [0.91, 0.93, 0.90, 0.95, 0.92]
    lo, hi = stats.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=stats.sem(x))
    assert results.ci95(x) == pytest.approx((hi - lo) / 2, rel=1e-12)
    assert results.ci95([0.5]) is None


def test_aggregate_flattens_and_skips_missing_and_strings():
    per_seed = [{"bn": {"acc": 0.9, "step": 100}, "curve": [1.0, 2.0], "data": "mnist"},
                {"bn": {"acc": 0.8, "step": None}, "curve": [3.0, 4.0], "data": "mnist"}]
    agg = results.aggregate(per_seed)
    assert set(agg) == {"bn/acc", "bn/step", "curve/0", "curve/1"}
    assert agg["bn/acc"]["mean"] == pytest.approx(0.85) and agg["bn/acc"]["n"] == 2
    assert agg["bn/step"] == {"mean": 100.0, "sd": None, "ci95": None, "n": 1, "missing": 1,
                              "values": [100.0, None]}
    assert agg["curve/1"]["mean"] == 3.0


def test_paired_difference_resolves_only_when_the_interval_excludes_zero():
    def result(a, b):
        return {"name": "x", "scale": "book",
                "summary": results.aggregate([{"a": x, "b": y} for x, y in zip(a, b)])}

    clear = results.paired_difference(result([1.0, 1.1, 1.2], [0.0, 0.1, 0.25]), "a", "b")
    assert clear.resolved and clear.direction == "a > b" and clear.low > 0
    noisy = results.paired_difference(result([1.0, 0.0, 0.5], [0.0, 1.0, 0.6]), "a", "b")
    assert not noisy.resolved and noisy.direction == "unresolved"
    with pytest.raises(KeyError, match="no summary key 'c'"):
        results.paired_difference(result([1.0], [0.0]), "a", "c")


def test_timing_keys_are_recognised():
    for key in ("train_seconds/bn", "bn/steps_per_s", "threads", "run/bn_train_s", "wall_s",
                "relu/bn/ms_per_step/3", "relu/bn_time_ratio/0"):
        assert results.is_timing_key(key), key
    for key in ("bn/final_test_acc", "steps_to_target", "first_step/0.9",
                "plain/median_beta_per_step/4"):
        assert not results.is_timing_key(key), key


def test_reproduce_writes_a_deterministic_file_with_provenance(tmp_path):
    a = results.reproduce("precise-bn", "smoke", 2, results_dir=tmp_path / "a")
    b = results.reproduce("precise-bn", "smoke", [0, 1], results_dir=tmp_path / "b", jobs=2)
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    assert a == tmp_path / "a" / "precise-bn" / "smoke.json"
    assert da["name"] == "precise-bn" and da["scale"] == "smoke" and da["seeds"] == [0, 1]
    assert da["per_seed"] == db["per_seed"] and da["summary"] == db["summary"]
    assert da["per_seed"][0]["summary"] != da["per_seed"][1]["summary"]   # seeds differ
    for key in ("commit", "date", "python", "numpy", "torch", "machine", "threads", "wall_s"):
        assert key in da["provenance"], key
    assert not any(results.is_timing_key(k) for k in da["summary"])
    assert set(da["timings"]) == {"0", "1"}
    stat = da["summary"]["precise_acc/0"]
    values = [results.flatten(p["summary"])["precise_acc/0"] for p in da["per_seed"]]
    assert stat["mean"] == pytest.approx(np.mean(values)) and stat["n"] == 2
    loaded = results.load("precise-bn", "smoke", tmp_path / "a")
    assert loaded["command"] == "python -m bnlib reproduce precise-bn --scale smoke --seeds 2"


def test_an_interrupted_run_leaves_the_previous_file(tmp_path, monkeypatch):
    path = results.reproduce("precise-bn", "smoke", 1, results_dir=tmp_path)
    before = path.read_text()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(results, "_run_one", boom)
    with pytest.raises(KeyboardInterrupt):
        results.reproduce("precise-bn", "smoke", 2, results_dir=tmp_path)
    assert path.read_text() == before
    assert [p.name for p in path.parent.iterdir()] == ["smoke.json"]


def test_load_names_the_command_when_a_result_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m bnlib reproduce nope --scale paper"):
        results.load("nope", "paper", tmp_path)


def test_fmt_reports_mean_interval_and_never():
    r = {"name": "x", "scale": "book",
         "summary": results.aggregate([{"a": 0.90, "s": 5}, {"a": 0.92, "s": None}])}
    assert results.fmt(r, "a", 2, scale=100).startswith("91.00 ± ")
    assert results.fmt(r, "s", 0) == "5 (1 of 2 never)"


def test_cli_reproduce_and_results(tmp_path, capsys):
    assert main(["reproduce", "precise-bn", "--scale", "smoke", "--seeds", "1",
                 "--results", str(tmp_path)]) == 0
    assert (tmp_path / "precise-bn" / "smoke.json").is_file()
    capsys.readouterr()
    assert main(["results", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "precise-bn" in out and "smoke" in out


@pytest.mark.parametrize("argv, message", [
    (["reproduce", "no-such", "--scale", "smoke"], "unknown experiment"),
    (["reproduce", "precise-bn", "--seeds", "0"], "--seeds: must be >= 1"),
    (["reproduce", "precise-bn", "--jobs", "0"], "--jobs: must be >= 1"),
])
def test_cli_reproduce_bad_input(argv, message, capsys):
    try:
        code = main(argv)
    except SystemExit as err:       # argparse's own errors
        code = err.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_stored_results_are_well_formed():
    """Every committed file under results/ has the documented fields and consistent statistics."""
    rows = results.stored()
    for row in rows:
        assert "error" not in row, row
        data = results.load(row["name"], row["scale"])
        assert data["seeds"] == [p["seed"] for p in data["per_seed"]]
        for key, s in data["summary"].items():
            assert not results.is_timing_key(key)
            present = [v for v in s["values"] if v is not None]
            assert s["n"] == len(present) and len(s["values"]) == len(data["seeds"])
            if present:
                assert math.isclose(s["mean"], float(np.mean(present)), rel_tol=1e-9, abs_tol=1e-12)


def test_unpaired_difference_is_welch():
    a = {"name": "a", "scale": "book", "summary": results.aggregate([{"x": v} for v in (1.0, 1.2, 0.9, 1.1)])}
    b = {"name": "b", "scale": "book", "summary": results.aggregate([{"x": v} for v in (0.2, 0.5, 0.1)])}
    d = results.unpaired_difference(a, "x", b, "x")
    t = stats.ttest_ind([1.0, 1.2, 0.9, 1.1], [0.2, 0.5, 0.1], equal_var=False)
    lo, hi = t.confidence_interval(0.95)
    assert d.mean == pytest.approx((lo + hi) / 2) and d.ci95 == pytest.approx((hi - lo) / 2)
    assert d.resolved


def test_stored_files_are_readable_by_everyone(tmp_path):
    path = results.reproduce("precise-bn", "smoke", 1, results_dir=tmp_path)
    assert path.stat().st_mode & 0o644 == 0o644


def test_reproduce_many_packs_seeds_and_gives_the_same_files(tmp_path):
    done = []
    paths = results.reproduce_many(["precise-bn", "init-mnist"], "smoke", 2,
                                   results_dir=tmp_path / "many", jobs=2, on_done=done.append)
    assert sorted(p.parent.name for p in paths) == ["init-mnist", "precise-bn"] and len(done) == 2
    for name in ("precise-bn", "init-mnist"):
        one = results.reproduce(name, "smoke", 2, results_dir=tmp_path / "one")
        a, b = json.loads(one.read_text()), results.load(name, "smoke", tmp_path / "many")
        assert a["per_seed"] == b["per_seed"] and a["summary"] == b["summary"]


def test_difference_format_and_glue(monkeypatch):
    d = results.Difference("a", "b", 0.0471, 0.0402, 3)
    assert d.format() == "+0.047 ± 0.040" and d.format(100, 1) == "+4.7 ± 4.0"
    glued = {}
    import myst_nb

    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display: glued.setdefault(name, value))
    assert results.glue("x", np.float64(0.123456789)) == 0.123457
    results.glue("n", np.int64(7))
    results.glue("phrase", "not resolved")
    assert glued == {"x": 0.123457, "n": 7, "phrase": "not resolved"}
    assert type(glued["x"]) is float and type(glued["n"]) is int
