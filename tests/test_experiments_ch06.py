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


def test_rnn_batch_norm_has_statistics_per_time_step_and_reuses_the_last():
    net = rnn_norm.RecurrentClassifier(4, 6, "bn", steps=5)
    assert len(net.norm) == 5
    net.train()
    assert net(torch.randn(3, 5, 4)).shape == (3, 10)
    net.eval()                                          # beyond step 5: step 5's statistics
    x = torch.randn(3, 7, 4)
    with torch.no_grad():
        out = net(x)
        net.norm[4].running_mean += 1.0                 # only the last step's statistics matter there
        assert not torch.allclose(net(x), out)
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


# --- recurrent-bn, gn-cnn, prenorm ------------------------------------------------------------

def test_norm_lstm_follows_cooijmans():
    from bnlib.torch.recurrent import NormLSTM, SequenceClassifier

    lstm = NormLSTM(3, 5, "bn", t_max=4)
    assert len(lstm.bn_x.steps) == len(lstm.bn_h.steps) == len(lstm.bn_c.steps) == 4
    assert torch.all(lstm.gamma_x == 0.1) and torch.all(lstm.gamma_h == 0.1) and torch.all(lstm.gamma_c == 0.1)
    assert not any(bn.affine for bn in lstm.bn_x.steps)          # no shift on the two terms
    lstm.train()
    lstm(torch.randn(8, 4, 3))
    assert all(int(bn.num_batches_tracked) == 1 for bn in lstm.bn_h.steps)
    lstm.eval()
    assert lstm(torch.randn(2, 9, 3)).shape == (2, 5)             # longer than t_max: runs
    assert int(lstm.bn_h.steps[-1].num_batches_tracked) == 1
    assert SequenceClassifier(3, 5, 4, norm="ln")(torch.randn(2, 6, 3)).shape == (2, 4)
    with pytest.raises(ValueError, match="norm must be"):
        NormLSTM(3, 5, "gn")
    with pytest.raises(ValueError, match="must have shape"):
        lstm(torch.randn(2, 3))


def test_recurrent_bn_smoke():
    from bnlib.experiments import recurrent_bn

    res = experiments.run("recurrent-bn", "smoke")
    s = res.summary()
    assert set(s["test_acc"]) == {"none", "bn"} and set(s["test_acc"]["bn"]) == {"10", "20"}
    assert s["bayes_acc"]["20"] > s["bayes_acc"]["10"]              # longer sequences carry more evidence
    assert s["stat_gap"]["h"]["10"] == 0.0
    assert len(res.plot().axes) == 3
    x, y, means = recurrent_bn.make_task(200, 50, noise=0.5)
    assert x.shape == (200, 50, 8) and recurrent_bn.bayes_accuracy(x, y, means) > 0.95
    with pytest.raises(ValueError, match="arm must be"):
        recurrent_bn.run(recurrent_bn.Config.at_scale("smoke", arms=("xx",)))


def test_gn_cnn_smoke():
    from bnlib.experiments import gn_cnn

    res = experiments.run("gn-cnn", "smoke")
    s = res.summary()
    assert s["batch_sizes"] == [2, 32]
    assert set(s["test_error"]) == {"bn", "gn", "bn_recomputed", "bn_batch_stats"}
    assert all(len(v) == 2 and all(0 <= e <= 1 for e in v) for v in s["test_error"].values())
    assert len(res.plot().axes) == 2
    for norm in ("none", "bn", "gn", "ln"):
        assert gn_cnn.build_cnn(norm, (8, 8), 4)(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="groups"):
        gn_cnn.build_cnn("gn", (6, 8), 4)
    with pytest.raises(ValueError, match="at least 2"):
        gn_cnn.run(gn_cnn.Config.at_scale("smoke", batch_sizes=(1, 4)))


def test_prenorm_smoke_and_blocks():
    from bnlib.torch.transformer import Block, TinyTransformer, ffn_grad_norms

    res = experiments.run("prenorm", "smoke")
    s = res.summary()
    assert set(s["grad_norm"]) == {"post-ln", "pre-ln", "pre-rms"}
    assert set(s["final_loss"]) == {f"{a}/{w}" for a in s["grad_norm"] for w in ("warmup", "no_warmup")}
    assert len(res.plot().axes) == 3
    torch.manual_seed(0)
    post = TinyTransformer(10, 6, d=16, heads=2, depth=3, placement="post")
    x = torch.randint(0, 10, (4, 6))
    assert post(x).shape == (4, 6, 10) and len(ffn_grad_norms(post, x, x)) == 3
    h = post.blocks[0](torch.randn(4, 6, 16))                       # Post-LN: block outputs normalised
    assert torch.allclose(h.mean(-1), torch.zeros(4, 6), atol=1e-5)
    pre = Block(16, 2, "pre", "rms")
    assert isinstance(pre.n1, torch.nn.RMSNorm)
    with pytest.raises(ValueError, match="placement"):
        Block(16, 2, "middle")
