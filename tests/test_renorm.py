"""Batch renormalisation (Ioffe 2017): NumPy forward/backward, the torch module, and Keras's moving variance."""
import numpy as np
import pytest
import torch

from bnlib.scratch import batchnorm_backward, batchnorm_forward, numerical_gradient, rel_error, running
from bnlib.scratch import renorm as R
from bnlib.torch.renorm import BatchRenorm as TorchBatchRenorm


def _case(seed=0, shape=(6, 4)):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = rng.normal(2.0, 3.0, size=shape)
    return (x, rng.normal(size=c), rng.normal(size=c), rng.normal(size=c), rng.uniform(0.5, 4.0, c),
            rng.normal(size=shape))


@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 4, 5)])
def test_backward_matches_numerical_gradient_with_r_and_d_fixed(shape):
    x, g, b, mu, sd, dy = _case(1, shape)
    y, cache = R.batchrenorm_forward(x, g, b, mu, sd, r_max=3.0, d_max=5.0)
    r, d = cache["r"], cache["d"]
    assert not np.allclose(r, 1) and not np.allclose(d, 0)      # a real correction
    dx, dg, db = R.batchrenorm_backward(dy, cache)
    f = lambda: np.sum(R.batchrenorm_forward(x, g, b, mu, sd, r=r, d=d)[0] * dy)   # r, d constants
    assert rel_error(numerical_gradient(f, x), dx) < 1e-8
    assert rel_error(numerical_gradient(f, g), dg) < 1e-8
    assert rel_error(numerical_gradient(f, b), db) < 1e-8


def test_r_and_d_are_constants_not_functions_of_x():
    # where neither clip is active, the forward pass is the eval-mode affine map of x, whose
    # gradient is gamma / sigma; the stop-gradient backward is batch norm's, scaled by r
    x, g, b, mu, sd, dy = _case(2)
    y, cache = R.batchrenorm_forward(x, g, b, mu, sd, r_max=100.0, d_max=100.0)
    assert np.allclose(y, R.batchrenorm_eval(x, g, b, mu, sd), atol=1e-12)
    dx = R.batchrenorm_backward(dy, cache)[0]
    assert rel_error(dx, dy * g / sd) > 0.1
    # where both are clipped, they are constant in x and the full derivative is the same
    y, cache = R.batchrenorm_forward(x, g, b, mu * 0 + 50.0, sd * 0 + 100.0, r_max=2.0, d_max=0.1)
    assert np.allclose(cache["r"], 0.5) and np.allclose(cache["d"], -0.1)
    f = lambda: np.sum(R.batchrenorm_forward(x, g, b, mu * 0 + 50.0, sd * 0 + 100.0, 2.0, 0.1)[0] * dy)
    assert rel_error(numerical_gradient(f, x), R.batchrenorm_backward(dy, cache)[0]) < 1e-8


def test_equals_batch_norm_when_r_is_1_and_d_is_0():
    x, g, b, mu, sd, dy = _case(3)
    y, cache = R.batchrenorm_forward(x, g, b, mu, sd, r_max=1.0, d_max=0.0)
    y0, cache0 = batchnorm_forward(x, g, b)
    assert np.allclose(cache["r"], 1) and np.allclose(cache["d"], 0)
    np.testing.assert_allclose(y, y0, atol=1e-13)
    for a, e in zip(R.batchrenorm_backward(dy, cache), batchnorm_backward(dy, cache0)):
        np.testing.assert_allclose(a, e, atol=1e-12)


def test_layer_updates_moving_mean_and_std_and_infers_with_them():
    x, g, b, mu, sd, dy = _case(4)
    layer = R.BatchRenorm(4, momentum=0.1, r_max=3.0, d_max=5.0)
    layer.running_mean[...], layer.running_std[...] = mu, sd
    layer.forward(x)
    sigma_b = np.sqrt(x.var(axis=0) + layer.eps)
    np.testing.assert_allclose(layer.running_mean, 0.9 * mu + 0.1 * x.mean(axis=0))
    np.testing.assert_allclose(layer.running_std, 0.9 * sd + 0.1 * sigma_b)
    layer.eval()
    out = layer.forward(x[:1])
    np.testing.assert_allclose(out, (x[:1] - layer.running_mean) / layer.running_std)
    dx = layer.backward(np.ones((1, 4)))
    np.testing.assert_allclose(dx, 1 / layer.running_std[None])
    with pytest.raises(ValueError, match="r_max"):
        R.BatchRenorm(4, r_max=0.5)
    with pytest.raises(ValueError, match="expects"):
        layer.forward(np.ones((3, 5)))


@pytest.mark.parametrize("shape", [(7, 3), (2, 3, 4, 4)])
def test_torch_module_matches_numpy(shape):
    x, g, b, mu, sd, dy = _case(5, shape)
    m = TorchBatchRenorm(shape[1], momentum=0.2, r_max=2.0, d_max=1.0).double()
    with torch.no_grad():
        m.weight.copy_(torch.tensor(g)); m.bias.copy_(torch.tensor(b))
        m.running_mean.copy_(torch.tensor(mu)); m.running_std.copy_(torch.tensor(sd))
    xt = torch.tensor(x, requires_grad=True)
    yt = m(xt)
    (yt * torch.tensor(dy)).sum().backward()
    y, cache = R.batchrenorm_forward(x, g, b, mu, sd, 2.0, 1.0)
    dx, dg, db = R.batchrenorm_backward(dy, cache)
    np.testing.assert_allclose(yt.detach().numpy(), y, atol=1e-12)
    np.testing.assert_allclose(xt.grad.numpy(), dx, atol=1e-11)
    np.testing.assert_allclose(m.weight.grad.numpy(), dg, atol=1e-11)
    np.testing.assert_allclose(m.bias.grad.numpy(), db, atol=1e-11)
    layer = R.BatchRenorm(shape[1], momentum=0.2, r_max=2.0, d_max=1.0)
    layer.running_mean[...], layer.running_std[...] = mu, sd
    layer.forward(x)
    np.testing.assert_allclose(m.running_mean.numpy(), layer.running_mean, atol=1e-13)
    np.testing.assert_allclose(m.running_std.numpy(), layer.running_std, atol=1e-13)
    m.eval()
    np.testing.assert_allclose(m(torch.tensor(x)).detach().numpy(),
                               R.batchrenorm_eval(x, g, b, layer.running_mean, layer.running_std), atol=1e-12)


def test_torch_module_is_batch_norm_with_default_limits():
    torch.manual_seed(0)
    x = torch.randn(8, 5, dtype=torch.float64)
    m, bn = TorchBatchRenorm(5).double(), torch.nn.BatchNorm1d(5).double()
    np.testing.assert_allclose(m(x).detach().numpy(), bn(x).detach().numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="more than 1 value"):
        m(x[:1])
    with pytest.raises(ValueError, match="r_max"):
        m.set_limits(0.5, 1.0)


def test_renorm_limits_schedule():
    assert R.renorm_limits(0, 100, 800, 500) == (1.0, 0.0)
    assert R.renorm_limits(100, 100, 800, 500) == (1.0, 0.0)
    r, d = R.renorm_limits(300, 100, 500, 300)
    assert r == pytest.approx(2.0) and d == pytest.approx(5.0)
    assert R.renorm_limits(10**6, 100, 800, 500) == (3.0, 5.0)
    with pytest.raises(ValueError):
        R.renorm_limits(0, 900, 800, 500)


def test_keras_moving_statistics_convert_to_pytorch():
    rng = np.random.default_rng(6)
    m = 4
    batches = [rng.normal(2.0, 3.0, size=(m, 3)) for _ in range(1500)]
    mean, var = running.keras_moving_statistics(batches, momentum=0.99)
    bn = torch.nn.BatchNorm1d(3, momentum=running.convert_momentum(0.99, "keras", "pytorch")).double()
    with torch.no_grad():
        for x in batches:
            bn(torch.from_numpy(x))
    np.testing.assert_allclose(mean, bn.running_mean.numpy(), rtol=1e-10)
    # the variances differ by m / (m - 1) once the start value is forgotten ...
    np.testing.assert_allclose(bn.running_var.numpy() / var, m / (m - 1), rtol=1e-4)
    # ... and convert_running_var removes the difference
    np.testing.assert_allclose(running.convert_running_var(var, m), bn.running_var.numpy(), rtol=1e-4)
    with pytest.raises(ValueError):
        running.keras_moving_statistics([], 0.99)
