"""Chapter 7's batch-norm variants and analysis probes against hand computations."""
import math

import numpy as np
import pytest
import torch

from bnlib import analysis
from bnlib.torch.variants import LpBatchNorm1d, NoisyBatchNorm1d, lp_spread


def _x(seed=0, n=16, c=5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=torch.float64) * 3 + 1


@pytest.mark.parametrize("p", [1, 2, "inf", 3])
def test_lp_batchnorm_matches_hand_computation(p):
    x = _x()
    layer = LpBatchNorm1d(5, p=p, eps=0.0).double()
    with torch.no_grad():
        layer.weight.copy_(torch.arange(1.0, 6.0))
        layer.bias.copy_(torch.linspace(-1, 1, 5))
    xn = x.numpy()
    xc = xn - xn.mean(0)
    s = {1: np.abs(xc).mean(0), 2: np.sqrt((xc ** 2).mean(0)), "inf": np.abs(xc).max(0),
         3: (np.abs(xc) ** 3).mean(0) ** (1 / 3)}[p]
    expected = np.arange(1.0, 6.0) * xc / s + np.linspace(-1, 1, 5)
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    # running statistics move 10% of the way from 0 / 1 towards the batch values
    np.testing.assert_allclose(layer.running_mean.numpy(), 0.1 * xn.mean(0), rtol=1e-6)
    np.testing.assert_allclose(layer.running_spread.numpy(), 0.9 + 0.1 * s, rtol=1e-6)


def test_lp_l2_is_standard_batch_norm_and_eval_uses_running_stats():
    x = _x(1)
    l2 = LpBatchNorm1d(5, p=2, eps=0.0).double()
    ref = torch.nn.BatchNorm1d(5, eps=1e-14, affine=False).double()
    np.testing.assert_allclose(l2(x).detach().numpy(), ref(x).detach().numpy(), atol=1e-10)
    l2.eval()
    y = l2(x).detach().numpy()
    expected = (x.numpy() - l2.running_mean.numpy()) / l2.running_spread.numpy()
    np.testing.assert_allclose(y, expected, atol=1e-12)


def test_lp_rejects_bad_input():
    with pytest.raises(ValueError, match="p must be"):
        LpBatchNorm1d(3, p=0.5)
    with pytest.raises(ValueError, match="shape"):
        LpBatchNorm1d(3)(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="more than one example"):
        LpBatchNorm1d(3)(torch.zeros(1, 3))
    assert torch.allclose(lp_spread(torch.tensor([[1.0], [-3.0]]), math.inf), torch.tensor([3.0]))


def test_noisy_bn_shifts_and_rescales_every_step_and_is_reproducible():
    x = _x(2).float()
    layer = NoisyBatchNorm1d(5, mean_range=1.0, scale_low=0.5, scale_high=2.0, seed=3)
    bn_out = torch.nn.BatchNorm1d(5)(x).detach()
    y1 = layer(x).detach()
    m1, s1 = layer.noise_mean.clone(), layer.noise_scale.clone()
    torch.testing.assert_close(y1, s1 * bn_out + m1, rtol=1e-5, atol=1e-5)
    assert torch.all(m1.abs() <= 1.0) and torch.all((s1 >= 0.5) & (s1 <= 2.0))
    # per unit: output mean is the offset, output std the scale
    torch.testing.assert_close(y1.mean(0), m1, atol=1e-5, rtol=0)
    layer(x)
    assert not torch.allclose(layer.noise_mean, m1) and not torch.allclose(layer.noise_scale, s1)
    again = NoisyBatchNorm1d(5, mean_range=1.0, scale_low=0.5, scale_high=2.0, seed=3)
    torch.testing.assert_close(again(x).detach(), y1)
    # evaluation mode: the expected noise, scale 1.25 and offset 0
    layer.eval()
    expected = 1.25 * (x - layer.bn.running_mean) / torch.sqrt(layer.bn.running_var + 1e-5)
    torch.testing.assert_close(layer(x).detach(), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        NoisyBatchNorm1d(3, scale_low=0.0)


def test_scale_invariance_of_bn_after_a_linear_layer():
    rng = np.random.default_rng(0)
    W, x, dy = rng.normal(size=(6, 4)), rng.normal(size=(32, 6)), rng.normal(size=(32, 4))
    rep = analysis.scale_invariance_report(W, x, dy, scales=(0.01, 0.5, 3.0, 100.0))
    assert rep["max_output_diff"] < 1e-10
    assert rep["max_abs_cos"] < 1e-10
    assert rep["max_grad_scaling_error"] < 1e-8
    # a plain linear layer (no BN) has neither property: its gradient does not scale as 1/c
    g1, g3 = x.T @ dy, x.T @ dy
    assert np.allclose(g1, g3)   # dL/dW of x W does not depend on W at all
    # and the torch MLP with BN has the same invariance (eps aside) for its first layer
    torch.manual_seed(0)
    model = analysis.mlp([6, 4, 3], "relu", "bn", seed=1, dtype=torch.float64)
    xt, yt = torch.tensor(x), torch.tensor(rng.integers(0, 3, 32))
    g, _ = analysis.gradients(model, xt, yt)
    w = model[0].weight.detach()
    cos = (w * g[0]).sum(1) / (w.norm(dim=1) * g[0].norm(dim=1))
    assert cos.abs().max() < 1e-4   # eps = 1e-5 breaks the invariance slightly


def test_gradient_change_is_zero_for_first_layer_and_leaves_model_unchanged():
    model = analysis.mlp([10, 8, 8, 3], "relu", "noisy", seed=0, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 10, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = analysis.gradient_change(model, x, y, lr=0.1)
    assert out["l2"][0] == 0.0 and out["cos"][0] == pytest.approx(1.0)
    assert all(v > 0 for v in out["l2"][1:]) and all(c < 1 for c in out["cos"][1:])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # with lr = 0 nothing moves, so G' = G exactly (the noise draws are replayed too)
    zero = analysis.gradient_change(model, x, y, lr=0.0)
    assert max(zero["l2"]) == 0.0


def test_landscape_probe_on_a_quadratic_matches_theory():
    # one linear layer, loss 0.5 * mean ||x W^T||^2 ... use cross-entropy net: check beta is consistent
    model = analysis.mlp([5, 3], "linear", None, seed=0, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (20,), generator=g)
    p = analysis.landscape_probe(model, x, y, [1e-4, 1e-1, 1.0])
    # for tiny steps the loss decreases by about eta ||g||^2
    assert p["loss0"] - p["loss"][0] == pytest.approx(1e-4 * p["grad_norm"] ** 2, rel=1e-2)
    np.testing.assert_allclose(p["beta"], p["grad_change"] / (np.array([1e-4, 1e-1, 1.0]) * p["grad_norm"]))
    # cross-entropy of a linear model is convex: the loss along -g first decreases
    assert p["loss"][1] < p["loss0"]


def test_per_example_noisy_bn_follows_santurkar_algorithm_1():
    from bnlib.torch.variants import PerExampleNoisyBatchNorm1d

    layer = PerExampleNoisyBatchNorm1d(6, seed=4)
    x = torch.randn(4096, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    layer.double().train()
    y = layer(x)
    bn = layer.bn(x).detach()                            # (the running statistics move; the output does not)
    mu, sigma = layer.noise_mu.double(), layer.noise_sigma.double()
    assert torch.all(mu.abs() <= 0.5) and torch.all((sigma >= 1) & (sigma <= 1.25))
    # every example has its own noise: y - sigma * bn is not the same for every row
    resid = (y - bn * sigma).detach()
    assert resid.std(0).min() > 0.01
    # per unit, the per-example offsets average to mu_j and the scales to sigma_j
    s_hat = ((y - y.mean(0)) * (bn - bn.mean(0))).mean(0) / bn.var(0, unbiased=False)
    assert torch.allclose(s_hat, sigma, atol=0.02)
    assert torch.allclose(y.mean(0).detach(), mu, atol=0.05)
    # a new step draws new mu_j, sigma_j; the same seed replays them
    first = mu.clone()
    layer(x)
    assert not torch.allclose(layer.noise_mu.double(), first)
    again = PerExampleNoisyBatchNorm1d(6, seed=4).double().train()
    again(x)
    assert torch.allclose(again.noise_mu.double(), first)
    # evaluation mode: the expected scale (1 + n_sigma) / 2, no offset
    layer.eval()
    assert torch.allclose(layer(x), 1.125 * layer.bn(x))
    with pytest.raises(ValueError):
        PerExampleNoisyBatchNorm1d(3, n_sigma=0.5)
