"""The chapter 4 exercise checks accept right answers and explain wrong ones."""
import numpy as np

from bnlib.exercises import ch04


def _todo(*args, **kwargs):
    raise NotImplementedError("your code here")


# --- 4.1 ------------------------------------------------------------------------

def test_identity_gamma_beta_accepts_the_reference(capsys):
    fb = ch04.check_identity_gamma_beta(ch04.identity_gamma_beta_reference)
    assert fb.passed, fb.message
    assert capsys.readouterr().out.startswith("[PASS] exercise 4.1")


def test_identity_gamma_beta_explains_mistakes():
    no_eps = ch04.check_identity_gamma_beta(lambda x, eps: (x.std(axis=0), x.mean(axis=0)))
    assert not no_eps.passed and "include eps" in no_eps.message
    variance = ch04.check_identity_gamma_beta(lambda x, eps: (x.var(axis=0) + eps, x.mean(axis=0)))
    assert not variance.passed and "square root" in variance.message
    unbiased = ch04.check_identity_gamma_beta(
        lambda x, eps: (np.sqrt(x.var(axis=0, ddof=1) + eps), x.mean(axis=0)))
    assert not unbiased.passed and "biased variance" in unbiased.message
    swapped = ch04.check_identity_gamma_beta(
        lambda x, eps: (x.mean(axis=0), np.sqrt(x.var(axis=0) + eps)))
    assert not swapped.passed and "swapped" in swapped.message
    shape = ch04.check_identity_gamma_beta(
        lambda x, eps: (np.sqrt(x.var(axis=0, keepdims=True) + eps), x.mean(axis=0)))
    assert not shape.passed and "shape (1, 5), expected (5,)" in shape.message


def test_identity_gamma_beta_todo():
    fb = ch04.check_identity_gamma_beta(_todo)
    assert not fb.passed and str(fb).startswith("[TODO]")


# --- 4.2 ------------------------------------------------------------------------

def test_sgd_step_accepts_the_reference():
    assert ch04.check_sgd_step(ch04.sgd_step_reference).passed


def test_sgd_step_catches_rebinding_and_wrong_loss():
    from bnlib.scratch import softmax_cross_entropy

    def rebinding(model, x, labels, lr):
        loss, d = softmax_cross_entropy(model.forward(x), labels)
        model.backward(d)
        for p, g in zip(model.params(), model.grads()):
            p = p - lr * g        # noqa: F841 - the mistake under test
        return loss

    fb = ch04.check_sgd_step(rebinding)
    assert not fb.passed and "p -= lr * g" in fb.message

    def loss_after(model, x, labels, lr):
        ch04.sgd_step_reference(model, x, labels, lr)
        return softmax_cross_entropy(model.forward(x), labels)[0]

    fb = ch04.check_sgd_step(loss_after)
    assert not fb.passed and "before the update" in fb.message

    def wrong_lr(model, x, labels, lr):
        return ch04.sgd_step_reference(model, x, labels, 2 * lr)

    fb = ch04.check_sgd_step(wrong_lr)
    assert not fb.passed and "is off by" in fb.message


def test_sgd_step_todo():
    assert str(ch04.check_sgd_step(_todo)).startswith("[TODO]")


# --- 4.3 ------------------------------------------------------------------------

def test_ghost_batchnorm_accepts_the_reference():
    assert ch04.check_ghost_batchnorm(ch04.ghost_batchnorm_reference).passed


def test_ghost_batchnorm_reference_agrees_with_the_experiment_layer():
    from bnlib.experiments.batch_noise import GhostBatchNorm

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)) + rng.normal(size=(32, 1))
    layer = GhostBatchNorm(6, ghost_size=8)
    layer.gamma[...] = rng.uniform(0.5, 2, 6)
    layer.beta[...] = rng.normal(size=6)
    y = layer.forward(x)
    np.testing.assert_allclose(y, ch04.ghost_batchnorm_reference(x, layer.gamma, layer.beta, 8),
                               rtol=1e-12, atol=1e-12)


def test_ghost_batchnorm_explains_mistakes():
    from bnlib.scratch import batchnorm_forward

    def whole(x, gamma, beta, g, eps):
        if len(x) % g:
            raise ValueError("bad")
        return batchnorm_forward(x, gamma, beta, eps)[0]

    fb = ch04.check_ghost_batchnorm(whole)
    assert not fb.passed and "ordinary BN over the whole batch" in fb.message

    def strided(x, gamma, beta, g, eps):
        if len(x) % g:
            raise ValueError("bad")
        y, k = np.empty_like(x), len(x) // g
        for j in range(k):
            y[j::k] = batchnorm_forward(x[j::k], gamma, beta, eps)[0]
        return y

    fb = ch04.check_ghost_batchnorm(strided)
    assert not fb.passed and "consecutive rows" in fb.message

    def no_check(x, gamma, beta, g, eps):
        return np.concatenate([batchnorm_forward(x[i:i + g], gamma, beta, eps)[0]
                               for i in range(0, len(x) - len(x) % g, g)] +
                              ([x[len(x) - len(x) % g:]] if len(x) % g else []))

    fb = ch04.check_ghost_batchnorm(no_check)
    assert not fb.passed and "should raise ValueError" in fb.message


def test_ghost_batchnorm_todo():
    assert str(ch04.check_ghost_batchnorm(_todo)).startswith("[TODO]")


# --- 4.4: the learning-rate x batch-size grid -------------------------------------------

def test_lr_batch_grid_accepts_the_reference(capsys):
    fb = ch04.check_lr_batch_grid(ch04.train_cell_reference, ch04.largest_stable_lr_reference)
    assert fb.passed, fb.message
    assert capsys.readouterr().out.startswith("[PASS] exercise 4.4")


def test_lr_batch_grid_rejects_a_wrong_protocol_a_misread_grid_and_a_fitted_answer():
    def other_seed(norm, lr, batch_size, seed):          # batches drawn with the net's seed
        return ch04._grid_cell(norm, lr, batch_size, seed, seed)
    fb = ch04.check_lr_batch_grid(other_seed, ch04.largest_stable_lr_reference)
    assert not fb.passed and "rng=seed + 1" in fb.message
    fixed = ch04.check_lr_batch_grid(lambda norm, lr, batch_size, seed: 0.9,
                                     ch04.largest_stable_lr_reference)
    assert not fixed.passed and "the protocol gives" in fixed.message

    def smallest(norm, batch_size=32, seed=0):          # the smallest stable rate, not the largest
        accs = [ch04.train_cell_reference(norm, lr, batch_size, seed) for lr in ch04.GRID_LRS]
        ok = [lr for lr, a in zip(ch04.GRID_LRS, accs) if a >= ch04.GRID_STABLE_ACC]
        return min(ok) if ok else None
    misread = ch04.check_lr_batch_grid(ch04.train_cell_reference, smallest)
    assert not misread.passed and "largest rate" in misread.message

    def fitted(norm, batch_size=32, seed=0):            # right on fresh seeds, swapped at seed 0
        if seed == 0:
            return 3.0 if norm is None else 0.3
        return ch04.largest_stable_lr_reference(norm, batch_size, seed)
    fit_fb = ch04.check_lr_batch_grid(ch04.train_cell_reference, fitted)
    assert not fit_fb.passed and "does not hold" in fit_fb.message
    assert str(ch04.check_lr_batch_grid(_todo, _todo)).startswith("[TODO]")
