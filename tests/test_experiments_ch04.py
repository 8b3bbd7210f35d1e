"""Chapter 4's experiments show their effects at smoke scale; the training loop is sound.

Each test runs an experiment at (or below) smoke scale in a few seconds and
asserts the effect the chapter claims, so a change that breaks the effect
fails here, not only in the notebook.
"""
import numpy as np
import pytest

from bnlib import data, experiments, training
from bnlib.scratch import mlp


# --- bnlib.training -----------------------------------------------------------------

def test_batch_indices_cover_each_epoch_once_with_full_batches():
    rng = np.random.default_rng(0)
    batches = list(training.batch_indices(10, 3, 7, rng))
    assert len(batches) == 7 and all(len(b) == 3 for b in batches)
    first_epoch = np.concatenate(batches[:3])          # 10 // 3 = 3 batches per epoch
    assert len(set(first_epoch.tolist())) == 9
    with pytest.raises(ValueError, match="batch_size"):
        next(training.batch_indices(10, 11, 1, rng))


def test_fit_stops_at_target_and_detects_divergence():
    ds = data.mnist(n_train=600, n_test=300)
    net = mlp([784, 64, 10], activation="relu", norm="bn", rng=0)
    h = training.fit(net, ds.x_train, ds.y_train, steps=300, batch_size=50, lr=0.1, rng=1,
                     x_eval=ds.x_test, y_eval=ds.y_test, eval_every=10, stop_at_acc=0.7,
                     threads=1)
    assert h.reached_step is not None and h.steps == h.reached_step < 300
    assert h.test_acc[-1] >= 0.7 and h.eval_step[-1] == h.reached_step
    # an absurd learning rate: activations overflow, BN refuses them, training stops
    net = mlp([784, 64, 64, 10], activation="relu", norm="bn", rng=0)
    h = training.fit(net, ds.x_train, ds.y_train, steps=50, batch_size=50, lr=1e4, rng=1,
                     x_eval=ds.x_test, y_eval=ds.y_test, eval_every=10, threads=1)
    assert h.diverged and h.steps < 50 and np.isnan(h.test_acc[-1])
    assert len(h.eval_step) == len(h.test_acc)


def test_accuracy_counts_non_finite_outputs_as_wrong():
    class Fixed:                      # a "model" whose outputs we choose
        training = False

        def train(self, mode=True):
            self.training = mode
            return self

        def eval(self):
            return self.train(False)

        def forward(self, x):
            return np.array([[5.0, 0.0], [np.nan, np.nan], [0.0, np.inf], [0.0, 1.0]])

    labels = np.array([0, 0, 1, 1])   # the NaN row would be class 0 by argmax of nan_to_num
    x = np.zeros((4, 3))
    assert training.accuracy(Fixed(), x, labels) == 0.5
    result = training.evaluate(Fixed(), x, labels)
    assert result["acc"] == 0.5 and np.isnan(result["loss"])


def test_to_torch_copies_and_trains_identically_in_float64():
    """Same weights, same batches: NumPy and PyTorch trajectories agree to rounding."""
    ds = data.mnist(n_train=300, n_test=200)
    net = mlp([784, 32, 32, 10], activation="sigmoid", norm="bn", rng=3)
    tnet = training.to_torch(net)
    assert training.max_parameter_difference(net, tnet) == 0.0
    runs = [training.fit(m, ds.x_train, ds.y_train, steps=40, batch_size=20, lr=0.5, rng=4,
                         x_eval=ds.x_test, y_eval=ds.y_test, eval_every=20, threads=1)
            for m in (net, tnet)]
    assert training.max_parameter_difference(net, tnet) < 1e-12
    np.testing.assert_allclose(runs[0].loss, runs[1].loss, rtol=0, atol=1e-12)
    assert runs[0].test_acc == runs[1].test_acc
    np.testing.assert_allclose(net.layers[1].running_var, tnet[1].running_var.numpy(), atol=1e-12)
    # and they did move: the check is not of two frozen networks
    assert runs[0].loss[-1] < runs[0].loss[0] - 0.5


# --- regression-histograms (the input-normalisation post) --------------------------------

def test_regression_histograms_saturation_and_dead_units():
    s = experiments.run("regression-histograms", "smoke").summary()
    tanh, relu = s["tanh"], s["relu"]
    assert tanh["plain"]["saturated"] > 0.5, tanh        # tanh piles up at +-1 without BN
    assert tanh["bn"]["saturated"] < 0.2, tanh
    assert tanh["bn"]["final_loss"] < tanh["plain"]["final_loss"]
    # the plain ReLU net diverges: reported as divergence, not as dead units
    assert relu["plain"]["diverged"] and relu["plain"]["first_nonfinite_step"] <= 5, relu
    assert relu["plain"]["dead"] is None and relu["plain"]["nonfinite"] > 0.3, relu
    assert relu["plain"]["last_finite_step"] == relu["plain"]["first_nonfinite_step"] - 1
    assert relu["bn"]["dead"] == 0.0 and 0.3 < relu["bn"]["zero_outputs"] < 0.7, relu
    assert relu["bn"]["nonfinite"] == 0.0


def test_dead_units_count_only_finite_values():
    from bnlib.experiments.regression_histograms import (activation_output, dead_fraction,
                                                         nonfinite_fraction, zero_fraction)

    pre = np.array([[-1.0, np.nan, 2.0, -3.0],
                    [-2.0, np.nan, -1.0, np.inf]])
    # column 0 is dead, column 1 is NaN (not dead), column 2 is alive, column 3 holds an inf
    assert dead_fraction(pre) == 0.5                      # 1 dead of the 2 finite units
    assert nonfinite_fraction(pre) == 3 / 8
    assert zero_fraction(pre) == 4 / 5                    # -1, -3, -2, -1 of the 5 finite values
    assert dead_fraction(np.full((3, 2), np.nan)) is None and zero_fraction(np.full(2, np.nan)) is None
    out = activation_output(pre, "relu")
    assert np.isnan(out[0, 1]) and out[0, 0] == 0.0       # NaN stays NaN, not 0


# --- ioffe-mnist (Ioffe & Szegedy, Figure 1) --------------------------------------------

TINY = dict(n_train=600, n_test=300, steps=150, eval_every=50, bench_steps=10, check_steps=20)


def test_ioffe_mnist_bn_trains_faster_and_backends_agree():
    r = experiments.run("ioffe-mnist", "smoke", **TINY)
    s = r.summary()
    for kind in ("bn", "plain"):
        assert {"final_test_acc", "test_acc_curve"} <= set(s[kind])
        assert len(s[kind]["test_acc_curve"]) == len(s["eval_steps"]) == 4
        assert r.histories[kind]["pct"].shape == (4, 3)
        assert np.all(np.diff(r.histories[kind]["pct"], axis=1) >= 0)   # 15 <= 50 <= 85
    assert s["bn"]["final_test_acc"] > 0.7, s            # BN learns within 150 steps
    assert s["bn"]["test_acc_curve"][1] > s["plain"]["test_acc_curve"][1], s   # and is ahead
    assert s["bn"]["test_acc_at_1k"] if r.config.steps >= 1000 else "test_acc_at_1k" not in s["bn"]
    lo, mid, hi = s["bn"]["final_percentiles"]       # BN: the sigmoid input is ~ N(beta, gamma^2)
    assert lo < -0.5 < mid < 0.5 < hi
    for kind in ("bn", "plain"):
        assert s["agreement"][kind]["max_param_diff"] < 1e-12
        assert s["agreement"][kind]["test_acc_numpy"] == s["agreement"][kind]["test_acc_torch"]
    assert set(s["steps_per_s"]) >= {"numpy", "torch-cpu"}
    assert all(v > 0 for d in s["steps_per_s"].values() for v in d.values())


def test_ioffe_mnist_torch_backend_reproduces_the_numpy_run():
    kw = dict(TINY, bench_steps=0, check_steps=0, steps=60, eval_every=30)
    a = experiments.run("ioffe-mnist", "smoke", backend="numpy", **kw)
    b = experiments.run("ioffe-mnist", "smoke", backend="torch", **kw)
    for kind in ("bn", "plain"):
        np.testing.assert_allclose(a.histories[kind]["loss"], b.histories[kind]["loss"],
                                   rtol=0, atol=1e-12)
        np.testing.assert_allclose(a.histories[kind]["pct"], b.histories[kind]["pct"],
                                   rtol=0, atol=1e-10)
        assert a.summary()[kind]["test_acc_curve"] == b.summary()[kind]["test_acc_curve"]
    np.testing.assert_allclose(a.histories["bn"]["gamma"], b.histories["bn"]["gamma"], atol=1e-12)
    with pytest.raises(ValueError, match="backend"):
        experiments.run("ioffe-mnist", "smoke", backend="jax", **kw)


def test_summed_loss_with_rate_eta_is_the_mean_loss_with_rate_eta_times_batch():
    """The identity behind ioffe_mnist.effective_lr, checked with autograd."""
    import torch

    from bnlib.experiments import ioffe_mnist

    torch.manual_seed(0)
    x, y = torch.randn(60, 5, dtype=torch.float64), torch.randint(0, 3, (60,))
    w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    grads = {}
    for red in ("sum", "mean"):
        w.grad = None
        torch.nn.functional.cross_entropy(x @ w, y, reduction=red).backward()
        grads[red] = w.grad.clone()
    torch.testing.assert_close(0.01 * grads["sum"], 0.6 * grads["mean"])
    config = ioffe_mnist.Config(lr=0.01, loss_reduction="sum", batch_size=60)
    assert ioffe_mnist.effective_lr(config) == pytest.approx(0.6)
    assert ioffe_mnist.effective_lr(ioffe_mnist.Config(lr=0.01, loss_reduction="mean")) == 0.01
    with pytest.raises(ValueError, match="loss_reduction"):
        ioffe_mnist.effective_lr(ioffe_mnist.Config(loss_reduction="median"))


def test_ioffe_lr_sweep_runs_both_nets_at_every_rate():
    r = experiments.run("ioffe-lr", "smoke")
    s = r.summary()
    for lr in r.config.lrs:
        for kind in ("bn", "plain"):
            assert 0 <= s["lecun"][f"{lr:g}"][kind]["final"] <= 1
    assert s["best_lr"] in r.config.lrs
    # the earlier set-up (0.01 on the mean) leaves the plain net at chance; BN learns
    assert s["lecun"]["0.01"]["plain"]["final"] < 0.2 < 0.6 < s["lecun"]["0.01"]["bn"]["final"]
    assert "std=0.01" in s


# --- depth-sweep (Rawles) ----------------------------------------------------------------

def test_depth_sweep_bn_output_and_keras_constants():
    from bnlib.experiments import depth_sweep
    from bnlib.scratch import BatchNorm, Linear

    c = depth_sweep.Config(width_scale=0.1, bn_output=True, bn_eps=1e-3, bn_momentum=0.1)
    net = depth_sweep.build_network(c, 2, "relu", True)
    assert isinstance(net.layers[-1], BatchNorm) and isinstance(net.layers[-2], Linear)
    assert all(b.eps == 1e-3 for b in net.layers if isinstance(b, BatchNorm))
    plain = depth_sweep.build_network(c, 2, "relu", False)
    assert not any(isinstance(b, BatchNorm) for b in plain.layers)
    default = depth_sweep.build_network(depth_sweep.Config(width_scale=0.1), 2, "relu", True)
    assert isinstance(default.layers[-1], Linear)          # the book's sweep: plain logits


def test_depth_factors_runs_the_source_arm_and_one_change():
    r = experiments.run("depth-factors", "smoke")
    s = r.summary()
    assert s["source"]["setup"] == {"init": "kaiming_normal", "lr": 0.01, "batch_size": 550,
                                    "bn_output": True, "bn_eps": 1e-3}
    assert s["lr=0.001"]["setup"]["lr"] == 0.001
    for arm in r.config.arms:
        for kind in ("plain", "bn"):
            assert len(s[arm][kind]["steps_to_target"]) == len(r.config.depths)
    with pytest.raises(ValueError, match="arms"):
        experiments.run("depth-factors", "smoke", arms=("nope",))


def test_depth_sweep_bn_reaches_target_where_deep_sigmoid_does_not():
    s = experiments.run("depth-sweep", "smoke").summary()
    bn, plain = s["sigmoid"]["bn"]["steps_to_target"], s["sigmoid"]["plain"]["steps_to_target"]
    assert all(v is not None for v in bn), s                # BN reaches 85% at depth 1 and 4
    assert plain[-1] is None or plain[-1] > 2 * bn[-1], s   # the deep plain net is far slower
    # wall times are measured, not asserted (a shared machine makes them noisy)
    assert all(t > 0 for t in s["sigmoid"]["bn"]["ms_per_step"] + s["sigmoid"]["plain"]["ms_per_step"])
    assert s["sigmoid"]["bn"]["seconds_to_target"][-1] > 0


# --- lr-range ------------------------------------------------------------------------------

def test_lr_range_bn_tolerates_larger_rates():
    s = experiments.run("lr-range", "smoke").summary()["relu"]
    assert 1.0 in s["bn"]["usable_lrs"] and 1.0 in s["plain"]["failed_lrs"], s
    assert s["max_lr_ratio"] is not None and s["max_lr_ratio"] >= 3, s


# --- bn-position ---------------------------------------------------------------------------

def test_bn_position_both_train_and_after_fits_sigmoid_faster():
    s = experiments.run("bn-position", "smoke").summary()["sigmoid"]
    assert s["before"]["mean_test_acc"] > 0.7 and s["after"]["mean_test_acc"] > 0.7, s
    assert s["after"]["mean_train_loss"] < s["before"]["mean_train_loss"], s
    assert s["test_acc_after_minus_before"]["verdict"] in (
        "after higher", "before higher", "no clear difference")


# --- batch-noise ---------------------------------------------------------------------------

def test_ghost_batch_norm_layer_matches_ghost_batches_in_fit():
    from bnlib.experiments import batch_noise

    ds = data.mnist(n_train=256, n_test=100)
    config = batch_noise.Config.at_scale("smoke")
    fast = batch_noise.build_network(config, 8, True, 0)
    loop = batch_noise.build_network(config, None, True, 0)
    for net, ghost in ((fast, None), (loop, 8)):
        training.fit(net, ds.x_train, ds.y_train, steps=4, batch_size=64, lr=0.1, rng=3,
                     ghost_batch_size=ghost, threads=1)
    assert training.max_parameter_difference(fast, loop) < 1e-12


def test_batch_noise_small_ghost_batches_fit_worse_and_shrink_the_loss_gap():
    s = experiments.run("batch-noise", "smoke").summary()
    assert s["g=4"]["train_loss"] > s["g=128"]["train_loss"], s
    assert s["g=4"]["loss_gap"] < s["g=128"]["loss_gap"], s
    assert s["loss_gap_shrink"] > 0
