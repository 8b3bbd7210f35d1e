"""The chapter 6 exercise checks accept right answers and explain wrong ones."""
import numpy as np

from bnlib.exercises import ch06
from bnlib.scratch import functional as F


def _todo(*args, **kwargs):
    raise NotImplementedError("your code here")


def test_is_invariant_reproduces_ba_et_al_table_1():
    rows = {n: [ch06.is_invariant(n, t) for t in ch06.TRANSFORMATIONS] for n in ("bn", "ln")}
    assert rows["bn"] == [True, False, True, True, True, False]
    assert rows["ln"] == [True, True, False, True, False, True]


def test_group_norm_check(capsys):
    fb = ch06.check_group_norm(ch06.group_norm_reference)
    assert fb.passed and capsys.readouterr().out.startswith("[PASS] exercise 6.1")

    def layer_norm(x, gamma, beta, num_groups, eps=1e-5):
        y = F.layernorm_forward(x, np.ones(x.shape[1:]), np.zeros(x.shape[1:]), eps)[0]
        shp = (1, -1) + (1,) * (x.ndim - 2)
        return gamma.reshape(shp) * y + beta.reshape(shp)

    fb = ch06.check_group_norm(layer_norm)
    assert not fb.passed and "layer norm" in fb.message and str(fb).startswith("[FAIL]")
    fb = ch06.check_group_norm(lambda x, g, b, G, eps=1e-5: x[:1])
    assert not fb.passed and "shape" in fb.message
    assert str(ch06.check_group_norm(_todo)).startswith("[TODO]")


def test_rmsnorm_backward_check():
    assert ch06.check_rmsnorm_backward(ch06.rmsnorm_backward_reference).passed

    def ln_like(dy, x, gamma, eps=1e-5):
        r = 1 / np.sqrt((x**2).mean(axis=1, keepdims=True) + eps)
        x_hat, g = x * r, dy * gamma
        dx = r * (g - g.mean(axis=1, keepdims=True) - x_hat * (g * x_hat).mean(axis=1, keepdims=True))
        return dx, (dy * x_hat).sum(axis=0)

    fb = ch06.check_rmsnorm_backward(ln_like)
    assert not fb.passed and "mean of the gradient" in fb.message
    fb = ch06.check_rmsnorm_backward(lambda dy, x, g, eps=1e-5: None)
    assert not fb.passed and "pair" in fb.message
    assert str(ch06.check_rmsnorm_backward(_todo)).startswith("[TODO]")


def test_invariances_check():
    assert ch06.check_invariances(ch06.invariances_reference).passed
    wrong = ch06.invariances_reference()
    wrong["rms"]["weight matrix re-centering"] = True        # the classic confusion with LN
    fb = ch06.check_invariances(lambda: wrong)
    assert not fb.passed and "1 of 12" in fb.message and "rms: weight matrix re-centering" in fb.message
    assert not ch06.check_invariances(lambda: {"gn": {}}).passed
    assert str(ch06.check_invariances(_todo)).startswith("[TODO]")


def test_placement_diagnosis_check():
    import torch

    def by_output_size(model, tokens):          # a student's measurement: RMS of the last block's output
        out = []
        hook = model.blocks[-1].register_forward_hook(lambda m, i, o: out.append(o.pow(2).mean(-1).sqrt()))
        with torch.no_grad():
            model(tokens)
        hook.remove()
        return "post" if torch.allclose(out[0], torch.ones_like(out[0]), atol=1e-2) else "pre"

    assert ch06.check_placement_diagnosis(by_output_size).passed
    assert ch06.check_placement_diagnosis(ch06.placement_reference).passed
    for constant in ("pre", "post"):                        # a guess fails: both kinds are drawn
        fb = ch06.check_placement_diagnosis(lambda m, t, c=constant: c)
        assert not fb.passed and "4 of 8" in fb.message
    flipped = ch06.check_placement_diagnosis(
        lambda m, t: {"pre": "post", "post": "pre"}[ch06.placement_reference(m, t)])
    assert not flipped.passed and "8 of 8" in flipped.message
    fb = ch06.check_placement_diagnosis(lambda m, t: "layer norm")
    assert not fb.passed and "'pre' or 'post'" in fb.message
    assert str(ch06.check_placement_diagnosis(_todo)).startswith("[TODO]")
