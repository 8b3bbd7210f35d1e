"""Checks for the exercises of chapter 4 (training with batch normalisation).

Each ``check_*`` takes the student's function, runs it on fixed inputs,
prints one line of feedback (PASS, FAIL with the reason, or TODO while the
function still raises ``NotImplementedError``) and returns the ``Feedback``.

* :func:`check_identity_gamma_beta` - exercise 4.1: the gamma and beta with
  which batch norm gives back its input, eq. (ch4-undo)
* :func:`check_sgd_step`            - exercise 4.2: one SGD step of a
  ``bnlib.scratch`` network on softmax cross-entropy
* :func:`check_ghost_batchnorm`     - exercise 4.3: batch norm over ghost
  batches, eq. (ch4-ghost)
"""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np

from bnlib.exercises import check_rng
from bnlib.exercises import ExerciseError, Feedback, expect_shape, report, run_check


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(a - b) / np.maximum(1e-12, np.abs(a) + np.abs(b))))


# --- exercise 4.1 --------------------------------------------------------------

def identity_gamma_beta_reference(x: np.ndarray, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """gamma = sqrt(var + eps) and beta = mu (biased batch variance), eq. (ch4-undo)."""
    x = np.asarray(x, dtype=np.float64)
    return np.sqrt(x.var(axis=0) + eps), x.mean(axis=0)


def check_identity_gamma_beta(identity_gamma_beta: Callable) -> Feedback:
    """Exercise 4.1: ``identity_gamma_beta(x, eps) -> (gamma, beta)`` with BN(x) = x."""
    from bnlib.scratch import batchnorm_forward

    def body() -> str:
        rng = check_rng(41)
        cases = [("a batch of 64 x 5", rng.normal(3.0, 2.0, size=(64, 5)) * np.arange(1, 6), 1e-5),
                 ("small spread (eps matters)", rng.normal(-1.0, 0.01, size=(32, 4)), 1e-3),
                 ("two examples", rng.normal(size=(2, 3)), 1e-5)]
        for label, x, eps in cases:
            got = identity_gamma_beta(x.copy(), eps)
            if got is None:
                raise ExerciseError("identity_gamma_beta returned None - return (gamma, beta)")
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise ExerciseError("identity_gamma_beta should return a pair (gamma, beta)")
            d = x.shape[1]
            gamma = expect_shape(f"gamma ({label})", got[0], (d,)).astype(np.float64)
            beta = expect_shape(f"beta ({label})", got[1], (d,)).astype(np.float64)
            exp_gamma, exp_beta = identity_gamma_beta_reference(x, eps)
            if _max_rel(beta, exp_beta) > 1e-9:
                hint = ""
                if np.allclose(beta, 0):
                    hint = " - beta must put the mean back"
                elif np.allclose(beta, exp_gamma):
                    hint = " - gamma and beta are swapped"
                raise ExerciseError(f"beta is wrong for {label}: max relative error "
                                    f"{_max_rel(beta, exp_beta):.2e}{hint}")
            if _max_rel(gamma, exp_gamma) > 1e-9:
                var = x.var(axis=0)
                hint = ""
                if _max_rel(gamma, np.sqrt(var)) < 1e-9:
                    hint = " - batch norm divides by sqrt(var + eps): include eps"
                elif _max_rel(gamma, var + eps) < 1e-9 or _max_rel(gamma, var) < 1e-9:
                    hint = " - that is the variance; gamma multiplies x_hat, so take the square root"
                elif _max_rel(gamma, np.sqrt(x.var(axis=0, ddof=1) + eps)) < 1e-9:
                    hint = (" - batch norm normalises with the biased variance (divide by m, "
                            "not m - 1)")
                raise ExerciseError(f"gamma is wrong for {label}: max relative error "
                                    f"{_max_rel(gamma, exp_gamma):.2e}{hint}")
            y, _ = batchnorm_forward(x, gamma, beta, eps)
            err = float(np.max(np.abs(y - x)) / np.max(np.abs(x)))
            if err > 1e-9:   # pragma: no cover - implied by the two checks above
                raise ExerciseError(f"BN(x) differs from x by {err:.2e} (relative) for {label}")
        return "with gamma = sqrt(var + eps) and beta = mu, batch norm returns its input"

    return report(run_check("exercise 4.1 identity_gamma_beta", body))


# --- exercise 4.2 --------------------------------------------------------------

def sgd_step_reference(model, x: np.ndarray, labels: np.ndarray, lr: float) -> float:
    """Forward, softmax cross-entropy, backward, ``p -= lr * g`` in place; the loss before the step."""
    from bnlib.scratch import softmax_cross_entropy

    loss, dlogits = softmax_cross_entropy(model.forward(x), labels)
    model.backward(dlogits)
    for p, g in zip(model.params(), model.grads()):
        p -= lr * g
    return loss


def check_sgd_step(sgd_step: Callable) -> Feedback:
    """Exercise 4.2: ``sgd_step(model, x, labels, lr) -> loss`` trains a scratch net one step."""
    from bnlib.scratch import mlp

    def body() -> str:
        rng = check_rng(42)
        x = rng.normal(size=(24, 12))
        labels = rng.integers(0, 4, size=24)
        for norm in (None, "bn"):
            what = "the BN network" if norm else "the plain network"
            mine = mlp([12, 16, 16, 4], activation="relu", norm=norm, rng=7)
            ref = copy.deepcopy(mine)
            before = [p.copy() for p in mine.params()]
            ids = [id(p) for p in mine.params()]
            for step in range(3):
                batch = slice(8 * step, 8 * step + 8)
                loss = sgd_step(mine, x[batch], labels[batch], 0.5)
                ref_loss = sgd_step_reference(ref, x[batch], labels[batch], 0.5)
                if loss is None:
                    raise ExerciseError("sgd_step returned None - return the mini-batch loss")
                loss = float(np.asarray(loss))
                if [id(p) for p in mine.params()] != ids:
                    raise ExerciseError("the model's parameter arrays were replaced; update them "
                                        "in place (p -= lr * g) so optimisers keep working")
                if all(np.array_equal(p, b) for p, b in zip(mine.params(), before)):
                    raise ExerciseError(f"the parameters of {what} did not change - did you "
                                        "write p = p - lr * g (a new array) instead of p -= lr * g?")
                if abs(loss - ref_loss) > 1e-9 * max(1.0, abs(ref_loss)):
                    raise ExerciseError(f"step {step + 1} of {what}: loss {loss:.6g}, expected "
                                        f"{ref_loss:.6g} (the loss of the forward pass before "
                                        "the update)")
                errs = [_max_rel(p, q) for p, q in zip(mine.params(), ref.params())]
                worst = int(np.argmax(errs))
                if errs[worst] > 1e-9:
                    names = [f"{type(layer).__name__}[{i}]" for i, layer in enumerate(mine.layers)
                             for _ in layer.params()]
                    raise ExerciseError(f"after step {step + 1} of {what}, parameter {worst} "
                                        f"({names[worst]}) is off by {errs[worst]:.2e} (relative)")
            if norm == "bn":
                bn = mine.layers[1]
                if bn.num_batches_tracked != 3:
                    raise ExerciseError("the BN layers should see one training-mode forward pass "
                                        f"per step; num_batches_tracked is {bn.num_batches_tracked}")
        return "three SGD steps match the reference, with and without BN"

    return report(run_check("exercise 4.2 sgd_step", body))


# --- exercise 4.3 --------------------------------------------------------------

def ghost_batchnorm_reference(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
                              ghost_size: int, eps: float = 1e-5) -> np.ndarray:
    """Batch norm applied to each block of ``ghost_size`` consecutive rows on its own."""
    from bnlib.scratch import batchnorm_forward

    if len(x) % ghost_size:
        raise ValueError(f"the batch of {len(x)} is not a multiple of ghost_size={ghost_size}")
    return np.concatenate([batchnorm_forward(x[i:i + ghost_size], gamma, beta, eps)[0]
                           for i in range(0, len(x), ghost_size)])


def check_ghost_batchnorm(ghost_batchnorm: Callable) -> Feedback:
    """Exercise 4.3: ``ghost_batchnorm(x, gamma, beta, ghost_size, eps) -> y``."""
    from bnlib.scratch import batchnorm_forward

    def body() -> str:
        rng = check_rng(43)
        x = rng.normal(size=(24, 5)) * 3.0 + np.linspace(-2, 2, 24)[:, None]
        gamma, beta = rng.uniform(0.5, 2.0, 5), rng.normal(size=5)
        whole, _ = batchnorm_forward(x, gamma, beta)
        for g in (24, 8, 4, 2):
            y = expect_shape(f"ghost_batchnorm(x of shape {x.shape}, ghost_size={g})",
                             ghost_batchnorm(x.copy(), gamma, beta, g, 1e-5), x.shape)
            expected = ghost_batchnorm_reference(x, gamma, beta, g)
            err = _max_rel(y, expected)
            if err <= 1e-9:
                continue
            hint = ""
            if g < 24 and _max_rel(y, whole) < 1e-9:
                hint = " - that is ordinary BN over the whole batch; normalise each ghost batch"
            elif g < 24:
                k = 24 // g
                strided = np.empty_like(x)
                for j in range(k):        # ghost batches of every k-th row instead of blocks
                    strided[j::k] = batchnorm_forward(x[j::k], gamma, beta)[0]
                if _max_rel(y, strided) < 1e-9:
                    hint = f" - ghost batches are blocks of {g} consecutive rows, not every {k}-th row"
            if not hint:
                plain = ghost_batchnorm_reference(x, np.ones(5), np.zeros(5), g)
                if _max_rel(y, plain) < 1e-9:
                    hint = " - apply gamma and beta after normalising"
            raise ExerciseError(f"ghost_size={g}: max relative error {err:.2e}{hint}")
        try:
            ghost_batchnorm(x[:10], gamma, beta, 4, 1e-5)
        except ValueError:
            pass
        else:
            raise ExerciseError("a batch of 10 with ghost_size=4 should raise ValueError "
                                "(10 is not a multiple of 4), not return something")
        return "ghost batches of 24, 8, 4 and 2 match, and a bad ghost size raises ValueError"

    return report(run_check("exercise 4.3 ghost_batchnorm", body, blocks=(
                                 "bnlib.experiments.batch_noise:GhostBatchNorm.forward",
    )))


# --- exercise 4.4: a learning-rate x batch-size grid ------------------------------

#: the grid of exercise 4.4 and the protocol of one cell
GRID_LRS = (0.03, 0.1, 0.3, 1.0, 3.0)
GRID_BATCH_SIZES = (8, 32, 128)
GRID_EXAMPLES = 4096          # every cell sees the same number of examples: steps = 4096 // batch
GRID_STABLE_ACC = 0.8         # a rate is "stable" when the test accuracy reaches this


def train_cell_reference(norm, lr: float, batch_size: int, seed: int) -> float:
    """One cell of the grid: test accuracy of a 64-32-32-10 ReLU net on the 8x8 digits.

    ``mlp([64, 32, 32, 10], activation="relu", norm=norm, rng=seed)``, trained by
    ``bnlib.training.fit`` with SGD at ``lr`` on mini-batches of ``batch_size``
    for ``GRID_EXAMPLES // batch_size`` steps (batches drawn with ``rng=seed + 1``),
    then ``bnlib.training.accuracy`` on the test digits (eval mode); a run whose
    loss stops being finite scores chance, 0.1.
    """
    return _grid_cell(norm, lr, batch_size, seed, seed + 1)


def _grid_cell(norm, lr: float, batch_size: int, net_seed: int, batch_seed: int) -> float:
    from bnlib import data, training
    from bnlib.scratch import mlp

    ds = data.digits8x8()
    net = mlp([64, 32, 32, 10], activation="relu", norm=norm, rng=net_seed)
    with np.errstate(all="ignore"):
        h = training.fit(net, ds.x_train, ds.y_train, steps=GRID_EXAMPLES // batch_size,
                         batch_size=batch_size, lr=lr, rng=batch_seed, threads=1)
        if h.diverged:
            return 0.1
        return float(training.accuracy(net, ds.x_test, ds.y_test))


def _largest_stable(accs, lrs=GRID_LRS, threshold: float = GRID_STABLE_ACC):
    """The largest rate whose accuracy reaches ``threshold`` (None if none does)."""
    ok = [lr for lr, a in zip(lrs, accs) if a >= threshold]
    return max(ok) if ok else None


def largest_stable_lr_reference(norm, batch_size: int = 32, seed: int = 0):
    """The largest rate of GRID_LRS whose grid cell reaches GRID_STABLE_ACC (None if none)."""
    return _largest_stable([train_cell_reference(norm, lr, batch_size, seed) for lr in GRID_LRS])


def check_lr_batch_grid(train_cell: Callable, largest_stable_lr: Callable,
                        batch_size: int = 32) -> Feedback:
    """Exercise 4.4: ``train_cell(norm, lr, batch_size, seed) -> accuracy`` (one cell of the
    learning-rate x batch-size grid) and ``largest_stable_lr(norm, batch_size, seed) -> rate``
    (the largest rate of ``GRID_LRS`` whose cell reaches ``GRID_STABLE_ACC``).

    Three things are checked: the cell follows the protocol (the reference's numbers on a
    fresh seed, to 1e-9); ``largest_stable_lr`` reads the grid right on a fresh seed; and
    the student's conclusion, ``largest_stable_lr`` at seed 0 for the plain and the BN net,
    holds on three fresh seeds (equal on at least two of them, or one grid step from the
    answer on all three): a conclusion that holds beyond the seed it was read from.
    """
    def body() -> str:
        rng = check_rng(44)
        seeds = [int(s) for s in rng.integers(1, 10_000, size=3)]
        # (1) the protocol: the same numbers as the reference on a fresh seed
        for norm, lr, bs in ((None, 0.3, 32), ("bn", 1.0, 8)):
            got = train_cell(norm, lr, bs, seeds[0])
            if got is None:
                raise ExerciseError("train_cell returned None - return the test accuracy")
            got = float(np.asarray(got))
            want = train_cell_reference(norm, lr, bs, seeds[0])
            if abs(got - want) > 1e-9:
                hint = ""
                if abs(got - _grid_cell(norm, lr, bs, seeds[0], seeds[0])) < 1e-9:
                    hint = " - build the net with rng=seed and draw the batches with rng=seed + 1"
                raise ExerciseError(f"train_cell(norm={norm!r}, lr={lr}, batch_size={bs}, "
                                    f"seed={seeds[0]}) = {got:.4f}, the protocol gives "
                                    f"{want:.4f}{hint}")
        idx = {lr: i for i, lr in enumerate(GRID_LRS)}
        lines = []
        for kind, norm in (("plain", None), ("bn", "bn")):
            truths = [largest_stable_lr_reference(norm, batch_size, s) for s in seeds]
            # (2) reading the grid
            got = largest_stable_lr(norm, batch_size, seeds[0])
            if got != truths[0]:
                raise ExerciseError(f"largest_stable_lr({norm!r}, {batch_size}, seed={seeds[0]}) "
                                    f"returned {got!r}; the grid's largest rate with test accuracy "
                                    f">= {GRID_STABLE_ACC} is {truths[0]!r}")
            # (3) the conclusion from seed 0, on fresh seeds
            mine = largest_stable_lr(norm, batch_size, 0)
            if mine is not None and mine not in GRID_LRS:
                raise ExerciseError(f"largest_stable_lr returned {mine!r}, not a rate of the grid "
                                    f"{GRID_LRS}")
            exact = sum(t == mine for t in truths)
            near = all(t is not None and mine is not None and abs(idx[t] - idx[mine]) <= 1
                       for t in truths)
            if exact < 2 and not near:
                raise ExerciseError(f"the largest stable rate of the {kind} net at batch "
                                    f"{batch_size} is {truths} on three fresh seeds; your seed-0 "
                                    f"answer {mine} does not hold")
            lines.append(f"{kind} {mine}")
        return (f"the protocol matches, the grid is read right, and the largest stable rates at "
                f"batch {batch_size} ({', '.join(lines)}) hold on three fresh seeds")

    return report(run_check("exercise 4.4 lr x batch grid", body))
