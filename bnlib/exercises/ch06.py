"""Checks for the exercises of chapter 6 (layer normalisation and friends).

Each ``check_*`` takes the student's function, runs it on fixed inputs,
prints one line of feedback (PASS, FAIL with the reason and by how much, or
TODO while the function still raises ``NotImplementedError``) and returns
the ``Feedback``.

* :func:`check_group_norm`       - exercise 6.1: group norm's forward pass, eq. (ch6-gn)
* :func:`check_rmsnorm_backward` - exercise 6.2: RMS norm's backward pass, eq. (ch6-rms-dx)
* :func:`check_invariances`      - exercise 6.3: the invariance table for group and RMS norm

:func:`is_invariant` decides an invariance numerically; the chapter uses it
to assert Ba et al.'s table for batch and layer norm.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from bnlib.exercises import check_rng
from bnlib.exercises import ExerciseError, Feedback, expect_close, expect_shape, report, run_check
from bnlib.scratch import functional as F
from bnlib.scratch.norms import groupnorm_forward, rmsnorm_backward, rmsnorm_forward

__all__ = ["check_group_norm", "check_rmsnorm_backward", "check_invariances", "is_invariant",
           "TRANSFORMATIONS", "NORMS", "group_norm_reference", "rmsnorm_backward_reference",
           "invariances_reference"]

#: the six transformations of Ba et al. (2016), Table 1, and what each does to ``a = x @ W``
TRANSFORMATIONS = {
    "weight matrix re-scaling": "W -> delta * W (one scalar for the whole matrix)",
    "weight matrix re-centering": "W -> W + g 1^T (the same vector g added to every unit's weights)",
    "weight vector re-scaling": "W[:, j] -> delta_j * W[:, j] (one scalar per unit)",
    "dataset re-scaling": "x_n -> delta * x_n for every example",
    "dataset re-centering": "x_n -> x_n + c for every example",
    "single example re-scaling": "x_n -> delta_n * x_n (one scalar per example)",
}

NORMS = ("bn", "ln", "gn", "rms")


def _normalise(norm: str, a: np.ndarray) -> np.ndarray:
    H = a.shape[1]
    if norm == "bn":
        return F.batchnorm_forward(a, np.ones(H), np.zeros(H), eps=1e-12)[0]
    if norm == "ln":
        return F.layernorm_forward(a, np.ones(H), np.zeros(H), eps=1e-12)[0]
    if norm == "gn":
        return groupnorm_forward(a, np.ones(H), np.zeros(H), 2, eps=1e-12)[0]
    if norm == "rms":
        return rmsnorm_forward(a, np.ones(H), eps=1e-12)[0]
    raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")


def is_invariant(norm: str, transformation: str, seed: int = 0) -> bool:
    """Is ``norm(x @ W)`` unchanged by ``transformation`` (a key of TRANSFORMATIONS)?

    Decided numerically on a random batch (8 examples, 5 inputs, 6 units,
    group norm with 2 groups), with random factors and shifts; ``eps`` is
    negligible (1e-12).
    """
    if transformation not in TRANSFORMATIONS:
        raise ValueError(f"transformation must be one of {list(TRANSFORMATIONS)}; got {transformation!r}")
    rng = np.random.default_rng(seed)
    x, W = rng.normal(size=(8, 5)), rng.normal(size=(5, 6))
    if transformation == "weight matrix re-scaling":
        x2, W2 = x, 3.7 * W
    elif transformation == "weight matrix re-centering":
        x2, W2 = x, W + rng.normal(size=(5, 1))
    elif transformation == "weight vector re-scaling":
        x2, W2 = x, W * rng.uniform(0.2, 5.0, size=6)
    elif transformation == "dataset re-scaling":
        x2, W2 = 0.3 * x, W
    elif transformation == "dataset re-centering":
        x2, W2 = x + rng.normal(size=5), W
    else:
        x2, W2 = x * rng.uniform(0.2, 5.0, size=(8, 1)), W
    return bool(np.allclose(_normalise(norm, x @ W), _normalise(norm, x2 @ W2), rtol=0, atol=1e-8))


# --- exercise 6.1 --------------------------------------------------------------

def group_norm_reference(x, gamma, beta, num_groups, eps=1e-5):
    """Group norm's output (``bnlib.scratch.groupnorm_forward`` without the cache)."""
    return groupnorm_forward(x, gamma, beta, num_groups, eps)[0]


def check_group_norm(group_norm: Callable) -> Feedback:
    """Exercise 6.1: ``group_norm(x, gamma, beta, num_groups, eps) -> y``, eq. (ch6-gn)."""

    def body() -> str:
        rng = check_rng(61)
        for shape, groups in (((4, 6, 3, 3), 3), ((3, 8, 5), 2), ((5, 4), 2)):
            x = rng.normal(1.0, 2.0, size=shape)
            C = shape[1]
            gamma, beta = rng.normal(size=C), rng.normal(size=C)
            got = group_norm(x.copy(), gamma.copy(), beta.copy(), groups, 1e-5)
            expected = group_norm_reference(x, gamma, beta, groups)
            got = expect_shape(f"group_norm's output for x of shape {shape}", got, shape)
            try:
                expect_close(f"group_norm's output for x of shape {shape}, {groups} groups",
                             got, expected, tol=1e-6)
            except ExerciseError as err:
                hint = ""
                ln = F.layernorm_forward(x, np.ones(shape[1:]), np.zeros(shape[1:]))[0]
                shp = (1, C) + (1,) * (len(shape) - 2)
                ln = gamma.reshape(shp) * ln + beta.reshape(shp)
                bn = F.batchnorm_forward(x, gamma, beta)[0] if len(shape) in (2, 4) else None
                if np.allclose(got, ln, atol=1e-6):
                    hint = (" - that is layer norm (one group); split the channels into "
                            "num_groups groups and normalise each group of each example")
                elif bn is not None and np.allclose(got, bn, atol=1e-6):
                    hint = " - that is batch norm; group norm takes statistics per example, never over axis 0"
                elif len(shape) > 2 and np.allclose(
                        got, groupnorm_forward(x, gamma, beta, C)[0], atol=1e-6):
                    hint = " - that is instance norm (one channel per group)"
                raise ExerciseError(f"{err}{hint}")
        return "statistics per example and group of channels, then a scale and shift per channel"

    return report(run_check("exercise 6.1 group_norm", body, blocks=(
                                 "bnlib.scratch.norms:groupnorm_forward",
    )))


# --- exercise 6.2 --------------------------------------------------------------

def rmsnorm_backward_reference(dy, x, gamma, eps=1e-5):
    """``(dx, dgamma)`` of RMS norm (``bnlib.scratch.rmsnorm_backward``)."""
    return rmsnorm_backward(dy, rmsnorm_forward(x, gamma, eps)[1])


def check_rmsnorm_backward(rms_backward: Callable) -> Feedback:
    """Exercise 6.2: ``rms_backward(dy, x, gamma, eps) -> (dx, dgamma)``, eq. (ch6-rms-dx)."""

    def body() -> str:
        rng = check_rng(62)
        x = rng.normal(0.7, 1.5, size=(5, 7))
        gamma, dy = rng.normal(size=7), rng.normal(size=(5, 7))
        got = rms_backward(dy.copy(), x.copy(), gamma.copy(), 1e-5)
        if got is None or not isinstance(got, (tuple, list)) or len(got) != 2:
            raise ExerciseError("rms_backward should return a pair (dx, dgamma)")
        dx_exp, dg_exp = rmsnorm_backward_reference(dy, x, gamma)
        expect_close("dgamma", got[1], dg_exp, tol=1e-6)
        try:
            expect_close("dx", got[0], dx_exp, tol=1e-6)
        except ExerciseError as err:
            hint = ""
            r = 1 / np.sqrt((x**2).mean(axis=1, keepdims=True) + 1e-5)
            x_hat, g = x * r, dy * gamma
            ln_like = r * (g - g.mean(axis=1, keepdims=True) - x_hat * (g * x_hat).mean(axis=1, keepdims=True))
            if np.allclose(np.asarray(got[0], float), ln_like, atol=1e-6):
                hint = (" - you subtracted the mean of the gradient as in layer norm; RMS norm "
                        "subtracts no mean in the forward pass, so that term is absent")
            elif np.allclose(np.asarray(got[0], float), r * g, atol=1e-6):
                hint = " - the rms depends on x too: add the path through mean(x**2)"
            raise ExerciseError(f"{err}{hint}")
        return "dx = inv_rms * (g - x_hat * mean(g * x_hat)) with g = gamma * dy"

    return report(run_check("exercise 6.2 rmsnorm_backward", body, blocks=(
                                 "bnlib.scratch.norms:rmsnorm_backward",
    )))


# --- exercise 6.3 --------------------------------------------------------------

def invariances_reference() -> dict:
    """``{norm: {transformation: bool}}`` for group and RMS norm, decided numerically."""
    return {norm: {t: is_invariant(norm, t) for t in TRANSFORMATIONS} for norm in ("gn", "rms")}


def check_invariances(invariances: Callable) -> Feedback:
    """Exercise 6.3: ``invariances() -> {"gn": {transformation: bool}, "rms": {...}}``."""

    def body() -> str:
        got = invariances()
        if not isinstance(got, dict) or set(got) != {"gn", "rms"}:
            raise ExerciseError("invariances() should return a dict with the keys 'gn' and 'rms'")
        expected = invariances_reference()
        wrong = []
        for norm, row in expected.items():
            if not isinstance(got[norm], dict) or set(got[norm]) != set(row):
                raise ExerciseError(f"invariances()[{norm!r}] should map each of the six "
                                    f"transformations {list(TRANSFORMATIONS)} to True or False")
            for t, value in row.items():
                if bool(got[norm][t]) != value:
                    wrong.append(f"{norm}: {t} ({TRANSFORMATIONS[t]})")
        if wrong:
            raise ExerciseError(f"{len(wrong)} of 12 entries are wrong: " + "; ".join(wrong))
        return "all 12 entries agree with the numerical test"

    return report(run_check("exercise 6.3 invariances", body, blocks=(
                                 "bnlib.exercises.ch06:is_invariant",
    )))


# --- exercise 6.4 (diagnosis) --------------------------------------------------

def placement_reference(model, tokens) -> str:
    """``"post"`` or ``"pre"``: where a :class:`bnlib.torch.transformer.TinyTransformer` normalises.

    Decided from a measurement, not from the model's attributes: a Post-LN
    block ends with a layer norm of unit gain at initialisation, so every
    block's output has a root mean square of 1 over the features of each
    token; a Pre-LN block adds to an un-normalised residual stream, whose size
    is whatever the embeddings and the branches make it.
    """
    import torch

    rms = []
    hooks = [b.register_forward_hook(lambda m, i, out: rms.append(out.pow(2).mean(-1).sqrt()))
             for b in model.blocks]
    try:
        with torch.no_grad():
            model(tokens)
    finally:
        for h in hooks:
            h.remove()
    unit = all(torch.allclose(r, torch.ones_like(r), atol=1e-2) for r in rms)
    return "post" if unit else "pre"


def check_placement_diagnosis(classify: Callable) -> Feedback:
    """Exercise 6.4: ``classify(model, tokens) -> "pre" or "post"`` for fresh transformers at
    initialisation (``bnlib.torch.transformer.TinyTransformer``), half of them of each kind."""

    def body() -> str:
        import torch

        from bnlib.exercises import check_rng
        from bnlib.torch.transformer import TinyTransformer

        rng = check_rng(64)
        kinds = ["pre", "post"] * 4
        rng.shuffle(kinds)
        wrong = []
        for k, kind in enumerate(kinds):
            depth, d = int(rng.integers(3, 9)), int(rng.choice([16, 32, 48]))
            torch.manual_seed(int(rng.integers(1 << 30)))
            model = TinyTransformer(10, 10, d=d, heads=2, depth=depth, placement=kind,
                                    norm=str(rng.choice(["ln", "rms"])))
            tokens = torch.as_tensor(rng.integers(0, 10, size=(16, 10)))
            expected = placement_reference(model, tokens)
            got = classify(model, tokens.clone())
            if got not in ("pre", "post"):
                raise ExerciseError(f"classify should return 'pre' or 'post'; got {got!r}")
            if got != expected:
                wrong.append(f"model {k + 1} ({depth} blocks, width {d}) is {expected}-normalised, "
                             f"you said {got}")
        if wrong:
            raise ExerciseError(f"{len(wrong)} of {len(kinds)} models misclassified: " + "; ".join(wrong)
                                + " - measure something that differs between the two: the size of "
                                  "each block's output, or the gradient norms per block (section 6.6)")
        return f"all {len(kinds)} fresh transformers classified correctly"

    return report(run_check("exercise 6.4 placement diagnosis", body))
