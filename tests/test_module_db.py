"""PyTorch's own module test inputs, run against bnlib's drop-in modules (issue 13).

``torch.testing._internal.common_modules.module_db`` holds, for every
``torch.nn`` module, the constructor and forward inputs PyTorch tests it with.
For BatchNorm1d, BatchNorm2d and LayerNorm each input is run through
``torch.nn`` and through bnlib's module with the same state, in float32 and
float64, training and eval, two forward steps, then a backward pass: outputs,
input and parameter gradients, running statistics and ``num_batches_tracked``
must agree within the dtype's tolerance.  Each module is also pickled,
deep-copied, round-tripped through ``state_dict`` both ways, called through
``torch.func.functional_call``, and checked with ``gradcheck`` and
``gradgradcheck`` in float64.

The differences from ``torch.nn`` that remain are documented in
``bnlib.torch.modules`` and pinned by the tests at the end of this file.
"""
from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch

import bnlib.torch as bt

common_modules = pytest.importorskip("torch.testing._internal.common_modules",
                                     reason="needs expecttest (in requirements.txt)")

PAIRS = {torch.nn.BatchNorm1d: bt.BatchNorm1d, torch.nn.BatchNorm2d: bt.BatchNorm2d,
         torch.nn.LayerNorm: bt.LayerNorm}
TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def _cases():
    cases = []
    for info in common_modules.module_db:
        if info.module_cls not in PAIRS:
            continue
        for dtype in (torch.float32, torch.float64):
            for training in (True, False):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    inputs = info.module_inputs_func(info, device="cpu", dtype=dtype,
                                                     requires_grad=True, training=training)
                for k, mi in enumerate(inputs):
                    name = (f"{info.module_cls.__name__}-{str(dtype)[6:]}-"
                            f"{'train' if training else 'eval'}-{k}-{mi.desc or 'default'}")
                    cases.append(pytest.param(info.module_cls, mi, dtype, training, id=name))
    return cases


CASES = _cases()


def _build(cls, mi, dtype, training):
    args, kwargs = mi.constructor_input.args, mi.constructor_input.kwargs
    torch.manual_seed(0)
    ref = cls(*args, **kwargs).to(dtype)
    with torch.no_grad():                       # non-trivial affine parameters
        for p in ref.parameters():
            p.add_(0.1 * torch.randn_like(p))
    ours = PAIRS[cls](*args, **kwargs).to(dtype)
    ours.load_state_dict(ref.state_dict())
    return ref.train(training), ours.train(training)


def _inputs(mi):
    return [a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
            for a in mi.forward_input.args]


def _run(module, mi):
    xs = _inputs(mi)
    for _ in range(2):
        y = module(*xs, **mi.forward_input.kwargs)
    weights = torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape).sin()
    if y.numel():
        (y * weights).sum().backward()
    grads = [x.grad for x in xs if isinstance(x, torch.Tensor)]
    grads += [p.grad for p in module.parameters()]
    return y.detach(), grads, {k: v.clone() for k, v in module.state_dict().items()}


def test_the_suite_is_not_empty():
    assert len(CASES) >= 40


@pytest.mark.parametrize("cls, mi, dtype, training", CASES)
def test_module_input_matches_torch_nn(cls, mi, dtype, training):
    ref, ours = _build(cls, mi, dtype, training)
    y_ref, g_ref, s_ref = _run(ref, mi)
    y_ours, g_ours, s_ours = _run(ours, mi)
    torch.testing.assert_close(y_ours, y_ref, **TOL[dtype])
    for a, b in zip(g_ours, g_ref):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, **TOL[dtype])
    assert s_ours.keys() == s_ref.keys()
    for key in s_ref:
        torch.testing.assert_close(s_ours[key], s_ref[key], **TOL[dtype])


@pytest.mark.parametrize("cls, mi, dtype, training",
                         [c for c in CASES if c.values[2] == torch.float64])
def test_serialisation_functional_call_and_gradchecks(cls, mi, dtype, training):
    ref, ours = _build(cls, mi, dtype, training)
    xs = _inputs(mi)
    if not all(isinstance(x, torch.Tensor) and x.numel() for x in xs):
        pytest.skip("an empty input has no gradient to check")
    for clone in (pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours)):
        assert type(clone) is type(ours) and clone.training == ours.training
        for key, value in ours.state_dict().items():
            torch.testing.assert_close(clone.state_dict()[key], value)
    ref.load_state_dict(ours.state_dict())            # the other way round
    params = {k: v.detach().clone() for k, v in ours.named_parameters()}
    buffers = {k: v.clone() for k, v in ours.named_buffers()}
    y = torch.func.functional_call(ours, {**params, **buffers}, tuple(xs))
    torch.testing.assert_close(y, ref(*_inputs(mi)))

    ours.eval() if not training else ours.train()
    x = xs[0].detach().clone().requires_grad_(True)
    probe = copy.deepcopy(ours)

    def f(x, *p):
        names = [k for k, _ in probe.named_parameters()]
        state = dict(zip(names, p))
        state.update({k: v.clone() for k, v in buffers.items()})   # fresh buffers per call
        return torch.func.functional_call(probe, state, (x,))

    p = tuple(v.clone().requires_grad_(True) for v in params.values())
    assert torch.autograd.gradcheck(f, (x, *p))
    assert torch.autograd.gradgradcheck(f, (x, *p))


# --------------------------------------------------------------------------- pinned differences

def test_torchscript_is_not_supported():
    """TorchScript cannot compile a custom autograd.Function (and is deprecated in torch 2.x)."""
    for module in (bt.BatchNorm1d(4), bt.LayerNorm(4)):
        with pytest.raises(Exception):
            torch.jit.script(module)


def test_mixed_dtypes_compute_where_torch_raises():
    """float64 input to float32 parameters: torch.nn raises; bnlib computes in the input's dtype."""
    x = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="mixed dtype"):
        torch.nn.BatchNorm1d(4)(x)
    assert bt.BatchNorm1d(4)(x).dtype == torch.float64


def test_a_rejected_batch_is_not_counted():
    """A batch of one in training mode: both raise, but torch.nn has already counted it."""
    for module, counted in ((torch.nn.BatchNorm1d(4), 1), (bt.BatchNorm1d(4), 0)):
        with pytest.raises(ValueError):
            module(torch.randn(1, 4))
        assert module.num_batches_tracked.item() == counted


@pytest.mark.parametrize("make", [lambda: bt.BatchNorm1d(4), lambda: bt.LayerNorm(4)])
def test_torch_compile_traces_the_modules_also_on_an_empty_batch(make):
    """torch.compile (AOT autograd tracing) works, including an empty training batch (it failed)."""
    import torch._dynamo

    torch._dynamo.reset()
    module, ref = make(), make()
    compiled = torch.compile(module, backend="aot_eager")
    for x in (torch.randn(0, 4), torch.randn(6, 4), torch.randn(0, 4)):
        torch.testing.assert_close(compiled(x), ref(x))
    torch.testing.assert_close(module.state_dict(), ref.state_dict())
