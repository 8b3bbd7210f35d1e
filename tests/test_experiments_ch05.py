"""Chapter 5's experiments show their effects at smoke scale.

Each test runs an experiment at smoke scale in a few seconds and asserts the
effect the chapter claims, so a change that breaks the effect fails here, not
only in the notebook.
"""
import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bnlib import experiments  # noqa: E402
from bnlib.experiments import eval_shift, precise_bn  # noqa: E402


@pytest.fixture(scope="module")
def shift_result():
    return experiments.run("eval-shift", "smoke")


@pytest.fixture(scope="module")
def precise_result():
    return experiments.run("precise-bn", "smoke")


def test_eval_shift_blows_up_in_eval_mode_only(shift_result):
    s = shift_result.summary()
    for net in eval_shift.NETS:
        scale = s[net]["scale"]
        assert scale["severity"][-1] == 255.0
        clean, worst = scale["eval_loss"][0], scale["eval_loss"][-1]
        # raw pixels (x 255): eval-mode loss hundreds of times the clean loss ...
        assert worst > 100 * clean and worst > 50
        # ... while batch statistics remove any positive scale of the input exactly
        # (up to eps, which matters for the nearly blank pixels of the input BN)
        assert scale["train_mode_loss"][-1] == pytest.approx(scale["train_mode_loss"][0], rel=0.02)
        assert scale["train_mode_loss"][-1] < 0.01 * worst
        # every BN layer's output is blown up in eval mode, about 1 in training mode
        assert min(scale["eval_rms_worst"]) > 50
        assert max(scale["train_mode_rms_worst"]) < 2
    hidden = s["hidden_bn"]["scale"]
    # without an input BN the scale is removed exactly by the first hidden BN's batch statistics
    assert hidden["train_mode_loss"][-1] == pytest.approx(hidden["train_mode_loss"][0], abs=2e-4)
    assert hidden["adabn_loss"][-1] == pytest.approx(hidden["adabn_loss"][0], rel=1e-3)
    assert hidden["adabn_acc"][-1] > hidden["eval_acc"][-1] + 0.2
    # BN of the raw input: blank pixels have ~zero variance, noise there is amplified ~316x
    inp = s["input_bn"]
    assert inp["blank_pixels"] > 100 and inp["max_input_gain"] > 300
    noise = inp["noise"]
    assert noise["eval_loss"][-1] > 20 * noise["eval_loss"][0]
    assert noise["eval_acc"][-1] < 0.3
    assert noise["adabn_acc"][-1] > noise["eval_acc"][-1] + 0.4
    assert noise["train_mode_acc"][-1] > noise["eval_acc"][-1] + 0.4
    # the network without input BN hardly notices the same noise
    assert s["hidden_bn"]["noise"]["eval_acc"][-1] > s["hidden_bn"]["noise"]["eval_acc"][0] - 0.1


def test_eval_shift_plot_and_json(shift_result, tmp_path):
    json_path, png_path = shift_result.save(tmp_path)
    assert json_path.exists() and png_path.stat().st_size > 10_000
    h = shift_result.histories["input_bn"]["noise"]
    assert h["eval_rms"].shape == (2, 4)               # severities x BN layers (input + 3)


def test_shift_helper_and_errors():
    rng = np.random.default_rng(0)
    x = np.ones((3, 4))
    assert np.array_equal(eval_shift.shift(x, "scale", 255.0, rng), 255 * x)
    assert eval_shift.shift(x, "noise", 0.5, rng).std() > 0.1
    with pytest.raises(ValueError, match="kind"):
        eval_shift.shift(x, "rotate", 1.0, rng)


def test_precise_bn_recovers_accuracy_of_a_bad_ema(precise_result):
    s = precise_result.summary()
    assert s["checkpoints"] == [30, 300]
    # the layers' own running statistics are the tracked EMA with momentum 0.1
    assert s["own_running_var_vs_tracked_0.1"] < 1e-10
    # short training with a small momentum: the EMA still remembers mean 0 / variance 1
    assert s["max_gain"]["0.01"] > 0.1
    assert s["ema_var_rel_error"]["0.01"][0] > 0.3
    # a large momentum averages only ~1 batch: noisy, never better than precise statistics by much
    assert s["ema_var_rel_error"]["0.9"][-1] > 2 * s["ema_var_rel_error"]["0.1"][-1]
    for m, gains in s["max_gain"].items():
        assert gains > -0.02, m
    precise = np.array(s["precise_acc"])
    assert precise[-1] > 0.8


def test_precise_bn_plot(precise_result, tmp_path):
    _, png = precise_result.save(tmp_path)
    assert png.stat().st_size > 10_000
    assert precise_result.histories["ema_acc"].shape == (3, 2)


def test_precise_bn_gap_bands_draws_a_band_per_momentum():
    from bnlib import plots

    steps = [10, 100, 1000]
    gaps = {"alpha 0.01": ([20.0, 3.0, 0.5], [10.0, -1.0, -0.5], [30.0, 7.0, 1.5]),
            "alpha 0.1": ([3.0, 0.0, -0.1], [1.0, -1.0, -0.6], [5.0, 1.0, 0.4])}
    fig = plots.precise_bn_gap_bands(steps, gaps, title="test")
    left, right = fig.axes
    assert len(left.lines) == 3 and len(left.collections) == 2     # two curves and a zero line
    assert list(right.lines[0].get_xdata()) == [100, 1000] and right.get_ylim() == (-3.0, 6.0)


def test_experiment_configs_validate():
    with pytest.raises(ValueError, match="checkpoints"):
        precise_bn.run(precise_bn.Config.at_scale("smoke", checkpoints=(1000,)))
    with pytest.raises(ValueError, match="momenta"):
        precise_bn.run(precise_bn.Config.at_scale("smoke", momenta=(0.0,)))
    assert {"eval-shift", "precise-bn"} <= set(experiments.available())


def test_bn_outputs_reports_overflow_as_nan():
    from bnlib.scratch import mlp

    net = mlp([4, 5, 5, 3], norm="bn", rng=0).eval()
    x = np.random.default_rng(0).normal(size=(6, 4))
    logits, rms, n = eval_shift.bn_outputs(net, x, training=False)
    assert n == 6 and np.all(np.isfinite(rms)) and rms.shape == (2,)
    x[1, 1] = np.inf
    logits, rms, _ = eval_shift.bn_outputs(net, x, training=False)
    assert np.all(np.isnan(logits)) and np.all(np.isinf(rms))
    loss, acc = eval_shift.loss_and_accuracy(logits, np.zeros(6, dtype=int))
    assert np.isnan(loss) and acc == 0.0
    with pytest.raises(ValueError, match="batch_size"):
        eval_shift.bn_outputs(net, x, training=True, batch_size=7)


# --- batch-renorm (section 5.8) -------------------------------------------------

@pytest.fixture(scope="module")
def renorm_result():
    return experiments.run("batch-renorm", "smoke")


def test_batch_renorm_matches_eval_mode_and_beats_bn_on_bad_batches(renorm_result):
    s = renorm_result.summary()
    assert s["checkpoints"][-1] == renorm_result.config.steps
    for setting in ("small", "noniid"):
        out = s[setting]
        # training mode computes (almost) what eval mode computes with batch renorm, not with BN
        assert out["renorm/output_gap"] < 0.2 < out["bn/output_gap"]
        assert out["renorm/final_d_max"] == pytest.approx(5.0) and out["renorm/final_r_max"] > 2.9
        # training and eval mode differ only where r or d is clipped
        if out["renorm/clipped_fraction"] == 0:
            assert out["renorm/output_gap"] < 1e-6
    # two classes per batch: BN's eval-mode accuracy suffers, batch renorm's does not
    assert s["noniid"]["renorm/test_acc"] > s["noniid"]["bn/test_acc"] + 0.02


def test_batch_renorm_plot_json_and_sampler(renorm_result, tmp_path):
    from bnlib.experiments import batch_renorm

    json_path, png_path = renorm_result.save(tmp_path)
    assert json_path.exists() and png_path.stat().st_size > 10_000
    labels = np.repeat(np.arange(10), 20)
    for idx in batch_renorm.sample_batches(labels, "noniid", 16, 5, np.random.default_rng(0), 2):
        assert len(idx) == 16 and len(set(labels[idx])) == 2
    with pytest.raises(ValueError, match="multiple"):
        list(batch_renorm.sample_batches(labels, "noniid", 15, 1, np.random.default_rng(0), 2))
    with pytest.raises(ValueError, match="settings"):
        batch_renorm.run(batch_renorm.Config.at_scale("smoke", settings=("huge",)))
    assert batch_renorm.schedule(batch_renorm.Config.at_scale("smoke"), 0) == (1.0, 0.0)


def test_eval_shift_keeps_its_models(shift_result):
    from bnlib.scratch import Sequential

    assert set(shift_result.models) == set(eval_shift.NETS)
    assert all(isinstance(m, Sequential) and not m.training for m in shift_result.models.values())


def test_batch_renorm_subset_of_settings_gives_the_same_runs(renorm_result):
    # the chapter runs two set-ups live and compares them with the stored seed 0 of all three
    subset = experiments.run("batch-renorm", "smoke", settings=("noniid",)).summary()
    assert subset["noniid"] == renorm_result.summary()["noniid"]
