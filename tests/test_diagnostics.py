"""bnlib.diagnostics against a hand computation on a 2-layer net with known weights,
the same numbers from the scratch and the PyTorch version of the net, and the
finite-values-only rule for saturated/dead units."""
import math

import numpy as np
import pytest

from bnlib import diagnostics
from bnlib.diagnostics import Recorder, activation_stats
from bnlib.scratch import Linear, ReLU, Sequential, Tanh

# 3 examples, 2 inputs -> 2 tanh units -> 1 output; loss L = sum(out) (so dL/dout = 1)
X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
W1 = np.array([[4.0, 0.1], [0.0, 0.2]])     # unit 0: z = 4, 0, 4; unit 1: z = 0.1, 0.2, 0.3
B1 = np.array([0.0, 0.0])
W2 = np.array([[0.5], [-1.0]])
LR = 0.1


def scratch_net(act=Tanh):
    l1, l2 = Linear(2, 2, rng=0), Linear(2, 1, rng=0)
    l1.W[...] = W1
    l1.b[...] = B1
    l2.W[...] = W2
    l2.b[...] = 0.0
    return Sequential(l1, act(), l2)


def hand():
    """Every number the recorder should report, computed by hand (formulas written out)."""
    z = X @ W1 + B1
    a = np.tanh(z)
    da = np.ones((3, 1)) @ W2.T                 # dL/da = W2^T for every example
    dz = da * (1 - a ** 2)
    dW1, dW2 = X.T @ dz, a.T @ np.ones((3, 1))
    slope = 1 - a ** 2
    return dict(z=z, a=a, da=da, dW1=dW1, dW2=dW2,
                saturated=np.mean(slope < 0.01),                     # unit 0 at z = 4: slope 0.0013
                dead=np.mean((slope < 0.01).all(axis=0)),            # no unit saturated on all 3
                up1=math.log10(LR * dW1.std() / W1.std()), up2=math.log10(LR * dW2.std() / W2.std()))


def step_scratch(net, rec):
    out = net.forward(X)
    net.backward(np.ones_like(out))
    return rec.record(0, LR)


def test_hand_computation_scratch():
    h = hand()
    assert h["saturated"] == pytest.approx(2 / 6)          # two of six unit-example values: z = 4
    net = scratch_net()
    with Recorder(net) as rec:
        snap = step_scratch(net, rec)
    assert rec.names == ["act 1 (tanh)"] and rec.weight_names == ["W 1", "W 2"]
    st = snap.layers["act 1 (tanh)"]
    assert st["mean"] == pytest.approx(h["a"].mean()) and st["std"] == pytest.approx(h["a"].std())
    assert st["saturated"] == pytest.approx(h["saturated"]) and st["dead"] == 0.0
    assert st["nonfinite"] == 0.0
    assert st["grad_std"] == pytest.approx(h["da"].std())
    assert snap.weights["W 1"]["update_ratio"] == pytest.approx(h["up1"])
    assert snap.weights["W 2"]["update_ratio"] == pytest.approx(h["up2"])
    assert snap.weights["W 1"]["grad_data_ratio"] == pytest.approx(h["dW1"].std() / W1.std())
    # histograms hold every value, activations on tanh's range
    counts, edges = st["act_hist"]
    assert counts.sum() == 6 and edges[0] == -1 and edges[-1] == 1
    assert rec.history["update_ratio"]["W 1"] == [pytest.approx(h["up1"])]


def test_hooks_removed_and_eval_not_recorded():
    net = scratch_net()
    rec = Recorder(net)
    out = net.forward(X)
    net.backward(np.ones_like(out))
    net.eval()
    net.forward(100 * X)             # an evaluation pass must not overwrite the training batch
    net.train()
    st = rec.record(0, LR).layers["act 1 (tanh)"]
    assert st["mean"] == pytest.approx(hand()["a"].mean())
    rec.detach()
    assert "forward" not in net[1].__dict__ and "backward" not in net[1].__dict__
    with pytest.raises(RuntimeError, match="detached"):
        rec.record(1, LR)


def test_torch_gives_the_same_numbers():
    torch = pytest.importorskip("torch")
    l1, l2 = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    with torch.no_grad():
        l1.weight.copy_(torch.tensor(W1.T)), l1.bias.zero_()
        l2.weight.copy_(torch.tensor(W2.T)), l2.bias.zero_()
    model = torch.nn.Sequential(l1, torch.nn.Tanh(), l2).double()
    rec = Recorder(model)
    model(torch.tensor(X)).sum().backward()
    snap = rec.record(0, LR)
    rec.detach()
    h = hand()
    st = snap.layers["act 1 (tanh)"]
    assert st["saturated"] == pytest.approx(h["saturated"]) and st["grad_std"] == pytest.approx(h["da"].std())
    # torch stores W transposed: the standard deviations (and so the ratios) are the same
    assert snap.weights["W 1"]["update_ratio"] == pytest.approx(h["up1"])
    assert snap.weights["W 2"]["update_ratio"] == pytest.approx(h["up2"])


def test_relu_dead_units_and_nonfinite():
    # ReLU: unit 0 has z = 4, 0, 4 (off on example 2), unit 1 negative everywhere -> dead
    net = scratch_net(ReLU)
    net[0].W[...] = np.array([[4.0, -1.0], [0.0, -1.0]])
    rec = Recorder(net)
    st = step_scratch(net, rec).layers["act 1 (relu)"]
    assert st["dead"] == 0.5 and math.isnan(st["saturated"]) and st["nonfinite"] == 0.0
    # NaN is not "dead": a unit with a NaN is left out, and the NaN share is reported
    z = np.array([[np.nan, -1.0, 2.0], [1.0, -2.0, np.inf], [3.0, -3.0, 1.0]])
    s = activation_stats("relu", z, np.maximum(z, 0))
    assert s["nonfinite"] == pytest.approx(2 / 9)
    assert s["dead"] == 1.0                 # of the one all-finite unit (column 1), it is dead
    t = activation_stats("tanh", np.array([[np.nan, 5.0], [np.nan, 5.0]]), np.tanh([[np.nan, 5.0]] * 2))
    assert t["saturated"] == 1.0 and t["dead"] == 1.0 and t["nonfinite"] == 0.5


def test_saturation_definition_is_the_books():
    # slope < 0.01: tanh saturates for |z| > 2.99, the sigmoid for |z| > 4.58
    z = np.array([[2.98, 3.0, 4.57, 4.6]])
    assert activation_stats("tanh", z[:, :2], np.tanh(z[:, :2]))["saturated"] == 0.5
    sig = 1 / (1 + np.exp(-z[:, 2:]))
    assert activation_stats("sigmoid", z[:, 2:], sig)["saturated"] == 0.5
    assert diagnostics.SATURATION_SLOPE == 0.01


def test_plot_draws_four_panels():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    net = scratch_net()
    rec = Recorder(net)
    for step in range(3):
        step_scratch(net, rec) if step == 0 else None
        out = net.forward(X)
        net.backward(np.ones_like(out))
        rec.record(step + 1, LR)
    fig = rec.plot()
    assert len(fig.axes) == 4
    assert list(rec.as_arrays()["step"]) == [0, 1, 2, 3]
    plt.close(fig)


def test_torch_conv_bn_relu_channels_are_units():
    """Conv weights (4-D) are watched, BN's gamma (1-D) is not; a ReLU channel that is off
    everywhere in the batch counts as one dead unit."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 3, 3)
    model = torch.nn.Sequential(conv, torch.nn.BatchNorm2d(3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(3 * 6 * 6, 2))
    with torch.no_grad():
        model[1].bias[2] = -100.0            # channel 2: BN output far below 0 -> ReLU off everywhere
    rec = Recorder(model)
    assert rec.names == ["act 1 (relu)"] and rec.weight_names == ["W 1", "W 2"]
    model(torch.randn(4, 1, 8, 8)).sum().backward()
    st = rec.record(0, 0.1).layers["act 1 (relu)"]
    assert st["dead"] == pytest.approx(1 / 3) and st["nonfinite"] == 0.0
    model.eval()
    model(torch.randn(7, 1, 8, 8))           # evaluation passes are not recorded
    assert rec._taps["act 1 (relu)"].a.shape == (4, 3, 6, 6)
    rec.detach()
