"""Chapter 7's experiments show their effects at smoke scale.

Each test runs an experiment at smoke scale (seconds) and asserts the effect
the chapter reports, so a change that breaks the effect fails here.
"""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bnlib import experiments  # noqa: E402


@pytest.fixture(scope="module")
def noisy():
    return experiments.run("noisy-bn", "smoke")


@pytest.fixture(scope="module")
def ics():
    return experiments.run("ics-gradient", "smoke")


@pytest.fixture(scope="module")
def landscape():
    return experiments.run("landscape", "smoke")


@pytest.fixture(scope="module")
def lp():
    return experiments.run("lp-norm", "smoke")


def test_registered():
    names = experiments.available()
    for name in ("noisy-bn", "ics-gradient", "landscape", "lp-norm"):
        assert name in names and names[name].startswith("Santurkar")


def test_noisy_bn_moves_the_distribution_yet_trains_like_bn(noisy):
    s = noisy.summary()
    # the injected noise makes the unit's input distribution jump between probes ...
    assert s["noisy"]["shift"] > 5 * s["bn"]["shift"] and s["noisy"]["shift"] > 5 * s["plain"]["shift"]
    assert s["noisy"]["spread_jump"] > 2 * s["bn"]["spread_jump"]
    # the shared variant (one scale and offset per unit and step) moves it further still
    assert s["noisy_shared"]["shift"] > s["noisy"]["shift"]
    assert s["noisy_shared"]["spread_jump"] > 5 * s["bn"]["spread_jump"]
    # ... and yet both noisy networks train about as fast as BN and much faster than no BN
    for kind in ("noisy", "noisy_shared"):
        assert s[kind]["best_test_acc"] > s["bn"]["best_test_acc"] - 0.03
        assert s[kind]["first_step_at_target"] is not None
    assert s["plain"]["best_test_acc"] < s["noisy"]["best_test_acc"] - 0.3
    h = noisy.histories["noisy"]
    assert h["pct"].shape == (len(h["eval_step"]), 3) and np.all(np.diff(h["pct"], axis=1) >= 0)


def test_ics_gradient_measures(ics):
    s = ics.summary()
    for net in ("plain", "bn", "linear_plain", "linear_bn"):
        h = ics.histories[net]
        assert np.all(h["l2"][:, 0] == 0) and np.allclose(h["cos"][:, 0], 1, atol=1e-5)   # first layer: G' = G
        assert np.all(h["l2"][:, 1:] > 0) and np.all(h["cos"] <= 1 + 1e-5)
    # what the chapter reports: in the ReLU MLP BN lowers the gradient change somewhat ...
    assert s["bn"]["median_l2"] < s["plain"]["median_l2"]
    # ... but in the deep linear network it does not (Santurkar et al.: not reduced, or larger)
    assert s["linear_bn"]["median_l2"] > 0.8 * s["linear_plain"]["median_l2"]
    assert s["bn"]["test_acc"] > 0.8 and s["linear_bn"]["test_acc"] > 0.8


def test_landscape_is_smoother_with_bn(landscape):
    r = landscape.summary()["ratio_plain_to_bn"]
    assert r["median_loss_range"] > 5 and r["median_max_grad_change"] > 3 and r["median_beta"] > 1.0
    h = landscape.histories["bn"]
    assert h["loss"].shape == (len(h["probe_step"]), len(landscape.config.step_sizes))


def test_lp_normalisations_train_like_bn(lp):
    s = lp.summary()
    for norm in ("l1", "l2", "linf"):
        assert s[norm]["best_test_acc"] > s["plain"]["best_test_acc"] + 0.3
        assert s[norm]["best_test_acc"] > s["bn"]["best_test_acc"] - 0.06
    # L2 differs from BN only in where eps goes
    np.testing.assert_allclose(lp.histories["l2"]["loss"], lp.histories["bn"]["loss"], rtol=1e-3)


def test_figures_draw(noisy, ics, landscape, lp):
    for res in (noisy, ics, landscape, lp):
        fig = res.plot()
        assert len(fig.axes) >= 2
        plt.close(fig)


def test_bad_configs_raise():
    with pytest.raises(ValueError, match="step_sizes"):
        experiments.run("landscape", "smoke", step_sizes=(0.0, 0.1))
    with pytest.raises(ValueError):
        experiments.run("ics-gradient", "smoke", probe_every=0)


def test_paired_differences_figure_marks_resolved_differences():
    from bnlib import plots
    from bnlib.results import Difference

    resolved = Difference("bn", "plain", -0.5, 0.2, 5)
    unresolved = Difference("bn", "plain", 0.1, 0.3, 5)
    assert resolved.resolved and not unresolved.resolved
    fig = plots.paired_differences_figure({"a": {"book": resolved, "paper": unresolved},
                                           "b": {"book": unresolved}}, ncols=2, title="t")
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2
    markers = [line for line in axes[0].get_lines() if line.get_marker() == "o"]
    assert [m.get_markerfacecolor() == "white" for m in markers] == [False, True]
    plt.close(fig)
