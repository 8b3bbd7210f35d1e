"""Property-based: random shapes, dtypes, strides and values into every public layer (issue 13).

For each draw the answer must be either a clear ``ValueError``/``TypeError``
or the same numbers as ``torch.nn`` (NumPy from scratch: as
``torch.nn.functional`` in float64).  Never another exception, never a
silently different answer.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bnlib.scratch as bs
import bnlib.torch as bt

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def tensors(draw):
    ndim = draw(st.sampled_from([2, 3, 4]))
    shape = [draw(st.integers(1, 5)) for _ in range(ndim)]
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.int64]))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3, 1e18]))
    special = draw(st.sampled_from([None, "nan", "inf"]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * scale
    if special and x.numel():
        x.view(-1)[0] = float(special)
    x = x.to(dtype) if dtype.is_floating_point else x.round().clamp(-100, 100).to(dtype)
    if draw(st.booleans()) and ndim >= 3:            # a non-contiguous view
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    return x


def _same_or_clear(ours, ref, loose=False):
    """``ours()`` equals ``ref()``, or ``ours()`` raises ValueError/TypeError."""
    try:
        expected = ref()
    except Exception:                 # torch refuses it: ours must refuse it clearly
        with pytest.raises((ValueError, TypeError)):
            ours()
        return
    try:
        got = ours()
    except (ValueError, TypeError):
        return                        # a clear refusal (e.g. overflow, one value per channel)
    tol = (dict(rtol=1e-4, atol=1e-4) if loose or torch.float32 in (expected.dtype, got.dtype)
           else dict(rtol=1e-7, atol=1e-9))
    torch.testing.assert_close(got, expected, equal_nan=True, **tol)


@SETTINGS
@given(x=tensors(), training=st.booleans())
def test_batchnorm_modules(x, training):
    cls, ref_cls = ((bt.BatchNorm2d, torch.nn.BatchNorm2d) if x.dim() == 4
                    else (bt.BatchNorm1d, torch.nn.BatchNorm1d))
    C = x.shape[1]
    ours, ref = cls(C).to(torch.float64), ref_cls(C).to(torch.float64)
    if x.dtype == torch.float32:
        ours, ref = ours.float(), ref.float()
    ours.train(training), ref.train(training)
    _same_or_clear(lambda: ours(x), lambda: ref(x))


@SETTINGS
@given(x=tensors())
def test_layer_norm(x):
    shape = tuple(x.shape[1:])
    dtype = x.dtype if x.dtype.is_floating_point else torch.float64
    ours, ref = bt.LayerNorm(shape).to(dtype), torch.nn.LayerNorm(shape).to(dtype)
    _same_or_clear(lambda: ours(x), lambda: ref(x))
    _same_or_clear(lambda: bt.layer_norm(x, shape), lambda: TF.layer_norm(x, shape))


@SETTINGS
@given(x=tensors())
def test_functional_batch_norm(x):
    _same_or_clear(lambda: bt.batch_norm(x, None, None, training=True),
                   lambda: TF.batch_norm(x, None, None, training=True))


@SETTINGS
@given(x=tensors())
def test_scratch_forward_matches_torch_in_float64(x):
    if x.dim() == 3:
        return                            # bnlib.scratch takes (N, C) or (N, C, H, W)
    a = x.numpy()
    C = a.shape[1]

    def ours():
        y, _ = bs.batchnorm_forward(a, np.ones(C), np.zeros(C))
        assert y.dtype == (a.dtype if a.dtype.kind == "f" else np.float64)
        return torch.from_numpy(np.asarray(y, dtype=np.float64))

    def ref():                            # NumPy integers are taken as float64
        if not torch.isfinite(x).all():
            raise ValueError("non-finite input")
        xf = x if x.dtype.is_floating_point else x.double()
        return TF.batch_norm(xf, None, None, training=True).double()

    _same_or_clear(ours, ref, loose=x.dtype == torch.float32)   # float32 is computed in float32


def _scratch_vs_torch(x, ours_fn, ref_fn):
    a = x.numpy()

    def ours():
        y = ours_fn(a)
        assert y.dtype == (a.dtype if a.dtype.kind == "f" else np.float64)
        return torch.from_numpy(np.asarray(y, dtype=np.float64))

    def ref():
        if not torch.isfinite(x).all():
            raise ValueError("non-finite input")
        xf = x if x.dtype.is_floating_point else x.double()
        return ref_fn(xf).double()

    _same_or_clear(ours, ref, loose=x.dtype == torch.float32)


@SETTINGS
@given(x=tensors())
def test_scratch_layer_group_instance_rms_norms_match_torch(x):
    if x.dim() != 4:
        x = x.reshape(x.shape[0], -1)             # (N, D) for layer and RMS norm
        D = x.shape[1]
        _scratch_vs_torch(x, lambda a: bs.layernorm_forward(a, np.ones(D), np.zeros(D))[0],
                          lambda t: TF.layer_norm(t, (D,)))
        _scratch_vs_torch(x, lambda a: bs.rmsnorm_forward(a, np.ones(D))[0],
                          lambda t: TF.rms_norm(t, (D,), eps=1e-5))
        return
    C = x.shape[1]
    _scratch_vs_torch(x, lambda a: bs.groupnorm_forward(a, np.ones(C), np.zeros(C), 1)[0],
                      lambda t: TF.group_norm(t, 1))
    _scratch_vs_torch(x, lambda a: bs.instancenorm_forward(a, np.ones(C), np.zeros(C))[0],
                      lambda t: TF.instance_norm(t))
