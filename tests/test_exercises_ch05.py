"""The chapter 5 exercise checks accept right answers and explain wrong ones."""
import numpy as np

from bnlib.exercises import ch05


def _todo(*args, **kwargs):
    raise NotImplementedError("your code here")


# --- 5.1 ------------------------------------------------------------------------

def test_population_statistics_accepts_the_reference(capsys):
    fb = ch05.check_population_statistics(ch05.population_statistics_reference)
    assert fb.passed, fb.message
    assert capsys.readouterr().out.startswith("[PASS] exercise 5.1")


def test_population_statistics_explains_mistakes():
    def biased(batches):
        return (np.mean([b.mean(0) for b in batches], 0), np.mean([b.var(0) for b in batches], 0))

    fb = ch05.check_population_statistics(biased)
    assert not fb.passed and "m / (m - 1)" in fb.message and str(fb).startswith("[FAIL]")

    def pooled(batches):
        x = np.concatenate(batches)
        return x.mean(0), x.var(0, ddof=1)

    fb = ch05.check_population_statistics(pooled)
    assert not fb.passed and "pooled" in fb.message and "relative error" in fb.message
    fb = ch05.check_population_statistics(lambda batches: np.zeros(3))
    assert not fb.passed and "pair" in fb.message
    assert str(ch05.check_population_statistics(_todo)).startswith("[TODO]")


# --- 5.2 ------------------------------------------------------------------------

def test_running_statistics_accepts_the_reference():
    assert ch05.check_running_statistics(ch05.running_statistics_reference).passed


def test_running_statistics_explains_mistakes():
    def keras(batches, momentum):       # the Keras convention: momentum weighs the old value
        keep = None if momentum is None else momentum
        mean, var = np.zeros(4), np.ones(4)
        for t, x in enumerate(batches, 1):
            f = 1 / t if keep is None else 1 - keep
            mean, var = (1 - f) * mean + f * x.mean(0), (1 - f) * var + f * x.var(0, ddof=1)
        return mean, var

    fb = ch05.check_running_statistics(keras)
    assert not fb.passed and "Keras convention" in fb.message

    def biased(batches, momentum):
        mean, var = np.zeros(4), np.ones(4)
        for t, x in enumerate(batches, 1):
            f = 1 / t if momentum is None else momentum
            mean, var = (1 - f) * mean + f * x.mean(0), (1 - f) * var + f * x.var(0)
        return mean, var

    fb = ch05.check_running_statistics(biased)
    assert not fb.passed and "unbiased" in fb.message

    def zero_start(batches, momentum):
        mean, var = np.zeros(4), np.zeros(4)
        for t, x in enumerate(batches, 1):
            f = 1 / t if momentum is None else momentum
            mean, var = (1 - f) * mean + f * x.mean(0), (1 - f) * var + f * x.var(0, ddof=1)
        return mean, var

    fb = ch05.check_running_statistics(zero_start)
    assert not fb.passed and "starts the running variance at 1" in fb.message

    def no_cumulative(batches, momentum):       # momentum=None treated as 0.1
        f = 0.1 if momentum is None else momentum
        mean, var = np.zeros(4), np.ones(4)
        for x in batches:
            mean, var = (1 - f) * mean + f * x.mean(0), (1 - f) * var + f * x.var(0, ddof=1)
        return mean, var

    fb = ch05.check_running_statistics(no_cumulative)
    assert not fb.passed and "momentum=None" in fb.message


# --- 5.3 ------------------------------------------------------------------------

def test_fold_accepts_the_reference():
    assert ch05.check_fold_linear_bn(ch05.fold_linear_bn_reference).passed


def test_fold_explains_mistakes():
    def no_eps(W, b, gamma, beta, mean, var, eps):
        s = gamma / np.sqrt(var)
        return W * s, (b - mean) * s + beta

    fb = ch05.check_fold_linear_bn(no_eps)
    assert not fb.passed and "eps" in fb.message and "differs" in fb.message

    def no_mean(W, b, gamma, beta, mean, var, eps):
        s = gamma / np.sqrt(var + eps)
        return W * s, b * s + beta

    fb = ch05.check_fold_linear_bn(no_mean)
    assert not fb.passed and "running mean" in fb.message

    def rows(W, b, gamma, beta, mean, var, eps):
        s = gamma / np.sqrt(var + eps)
        return (W.T * s[:, None]), (b - mean) * s + beta

    fb = ch05.check_fold_linear_bn(rows)
    assert not fb.passed and "shape (4, 7), expected (7, 4)" in fb.message

    def bias_none_crash(W, b, gamma, beta, mean, var, eps):
        s = gamma / np.sqrt(var + eps)
        return W * s, (np.zeros_like(beta) if b is None else b - mean) * s + beta

    fb = ch05.check_fold_linear_bn(bias_none_crash)
    assert not fb.passed and "b=None" in fb.message


# --- 5.4: diagnose a planted train/eval bug ----------------------------------------

def test_diagnose_accepts_the_reference_for_many_run_seeds(monkeypatch):
    for seed in range(12):
        monkeypatch.setenv("BNLIB_CHECK_SEED", str(seed))
        fb = ch05.check_diagnose_train_eval_bug(ch05.diagnose_reference)
        assert fb.passed, (seed, fb.message)


def test_diagnose_plants_every_kind_in_every_layer():
    from bnlib.exercises import check_rng
    from bnlib.scratch.running import batchnorm_layers

    rng = check_rng(1)
    for kind in ch05.TRAIN_EVAL_BUGS:
        for layer in range(3):
            model, x, name, got_kind = ch05.plant_train_eval_bug(rng, kind=kind, layer=layer)
            assert got_kind == kind and name == batchnorm_layers(model)[layer][0]
            assert ch05.diagnose_reference(model, x) == (name, kind)


def _diagnose(model, x):
    # a student's solution: the chapter's tools, not bnlib's reference for the exercise
    import copy

    from bnlib.scratch.running import batchnorm_layers, bn_layers_in_training_mode, recompute_bn_stats

    if bn_layers_in_training_mode(model):
        return bn_layers_in_training_mode(model)[0], "train_mode"
    layers = batchnorm_layers(model)
    for name, bn in layers:
        if not bn.running_mean.any() and np.all(bn.running_var == 1):
            return name, "never_updated"
    fresh = recompute_bn_stats(copy.deepcopy(model), np.array_split(x, 16))
    off = {name: np.abs(bn.running_mean - ref.running_mean).max() / np.sqrt(ref.running_var).min()
           + np.abs(np.log(bn.running_var / ref.running_var)).max()
           for (name, bn), (_, ref) in zip(layers, batchnorm_layers(fresh))}
    return max(off, key=off.get), "overwritten"


def test_diagnose_accepts_a_students_own_solution(monkeypatch):
    for seed in range(4):
        monkeypatch.setenv("BNLIB_CHECK_SEED", str(seed))
        fb = ch05.check_diagnose_train_eval_bug(_diagnose)
        assert fb.passed, (seed, fb.message)


def test_diagnose_rejects_wrong_and_memorised_answers(monkeypatch):
    assert str(ch05.check_diagnose_train_eval_bug(_todo)).startswith("[TODO]")
    fb = ch05.check_diagnose_train_eval_bug(lambda model, x: None)
    assert not fb.passed and "None" in fb.message
    fb = ch05.check_diagnose_train_eval_bug(lambda model, x: ("1", "gremlins"))
    assert not fb.passed and "not one of" in fb.message

    def only_training_flags(model, x):
        from bnlib.scratch.running import bn_layers_in_training_mode
        names = bn_layers_in_training_mode(model)
        return (names[0], "train_mode") if names else ("1", "overwritten")

    monkeypatch.setenv("BNLIB_CHECK_SEED", "0")
    fb = ch05.check_diagnose_train_eval_bug(only_training_flags)
    assert not fb.passed and "hint" in fb.message

    def right_kind_wrong_layer(model, x):
        name, kind = _diagnose(model, x)
        return ("4" if name == "1" else "1"), kind

    fb = ch05.check_diagnose_train_eval_bug(right_kind_wrong_layer)
    assert not fb.passed and "wrong layer" in fb.message

    # an answer fitted to the bugs planted for one run seed fails under another
    answers = []

    def record(model, x):
        answers.append(_diagnose(model, x))
        return answers[-1]

    assert ch05.check_diagnose_train_eval_bug(record).passed
    replay = iter(answers)
    assert ch05.check_diagnose_train_eval_bug(lambda m, x: next(replay)).passed
    monkeypatch.setenv("BNLIB_CHECK_SEED", "1")
    replay = iter(answers)
    assert not ch05.check_diagnose_train_eval_bug(lambda m, x: next(replay)).passed


def test_diagnose_gets_copies(monkeypatch):
    monkeypatch.setenv("BNLIB_CHECK_SEED", "0")

    def mutate_then_answer(model, x):
        answer = _diagnose(model, x)
        model.layers[1].running_mean[...] = 99.0          # must not change the check's network
        x[...] = 0.0
        return answer

    assert ch05.check_diagnose_train_eval_bug(mutate_then_answer).passed
