"""Chapter 6's experiments show their effects at smoke scale."""
import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from bnlib import experiments  # noqa: E402
from bnlib.experiments import batch_size, rnn_norm  # noqa: E402


@pytest.fixture(scope="module")
def bs_result():
    return experiments.run("batch-size", "smoke")


@pytest.fixture(scope="module")
def rnn_result():
    return experiments.run("rnn-norm", "smoke")


def test_batch_norm_degrades_at_tiny_batches_layer_and_group_norm_do_not(bs_result):
    err = bs_result.summary()["test_error"]
    assert bs_result.summary()["batch_sizes"] == [2, 32]
    assert err["bn"][0] > err["bn"][1] + 0.1            # BN: batch 2 much worse than 32
    for norm in ("ln", "gn"):
        assert abs(err[norm][0] - err[norm][1]) < 0.05  # per-example norms do not care
        assert err[norm][0] < err["bn"][0] - 0.1
    assert set(bs_result.histories["error"]) == {"bn", "ln", "gn"}
    fig = bs_result.plot()
    assert len(fig.axes[0].lines) == 3


def test_batch_size_networks_and_config_errors():
    for norm in batch_size.LABELS:
        net = batch_size.build_network(norm, 10, (8,), groups=2)
        assert net(torch.zeros(3, 10)).shape == (3, 10)
    with pytest.raises(ValueError, match="norm must be"):
        batch_size.build_network("xx", 10, (8,))
    with pytest.raises(ValueError, match="groups"):
        batch_size.run(batch_size.Config.at_scale("smoke", groups=5))
    with pytest.raises(ValueError, match="batch size"):
        batch_size.run(batch_size.Config.at_scale("smoke", batch_sizes=(1, 8)))


def test_layer_norm_rnn_trains_better(rnn_result):
    s = rnn_result.summary()
    acc, loss = s["final_test_acc"], s["final_train_loss"]
    assert acc["ln@0.01"] > acc["none@0.01"] + 0.03
    assert loss["ln@0.01"] < loss["none@0.01"]
    assert "bn@0.01" in s["bn_test_acc_with_batch_statistics"]
    h = rnn_result.histories["ln@0.01"]
    assert h["test_acc"].shape == (1, len(h["eval_step"]))
    fig = rnn_result.plot()
    assert len(fig.axes) == 2


def test_rnn_batch_norm_has_statistics_per_time_step_only():
    net = rnn_norm.RecurrentClassifier(4, 6, "bn", steps=5)
    assert len(net.norm) == 5
    net.train()
    assert net(torch.randn(3, 5, 4)).shape == (3, 10)
    with pytest.raises(ValueError, match="statistics for 5 time steps"):
        net(torch.randn(3, 6, 4))
    ln = rnn_norm.RecurrentClassifier(4, 6, "ln", steps=5)
    assert ln(torch.randn(2, 9, 4)).shape == (2, 10)   # layer norm: any length
    radius = torch.linalg.eigvals(rnn_norm.RecurrentClassifier(4, 6, "none", recurrent_gain=1.5)
                                  .wh.weight).abs().max().item()
    assert radius == pytest.approx(1.5, rel=1e-4)
    with pytest.raises(ValueError, match="norm must be"):
        rnn_norm.RecurrentClassifier(4, 6, "gn")


def test_batch_size_errors_plot_draws_error_bars_with_ci():
    from bnlib import plots

    sizes, err = [2, 8, 32], {"bn": [0.4, 0.1, 0.07], "ln": [0.09, 0.08, 0.08]}
    fig = plots.batch_size_errors(sizes, err, ci={"bn": [0.05, 0.01, 0.01], "ln": [0.01] * 3})
    ax = fig.axes[0]
    assert len(ax.containers) == 2                 # one ErrorbarContainer per normalisation
    assert len(ax.lines) >= 2
    fig = plots.batch_size_errors(sizes, err)      # without ci: plain lines, as before
    assert len(fig.axes[0].lines) == 2 and not fig.axes[0].containers
