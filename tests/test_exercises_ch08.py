"""The chapter 8 exercise checks accept right answers and explain wrong ones."""
import numpy as np
import torch

from bnlib.exercises import ch08


def _todo(*args, **kwargs):
    raise NotImplementedError("your code here")


def test_eval_passes(capsys):
    four, folded = ch08.eval_passes_reference()
    assert round(four) == 8 and round(folded) == 2
    assert ch08.check_eval_passes(lambda: (8, 2)).passed
    assert capsys.readouterr().out.startswith("[PASS] exercise 8.1")
    fb = ch08.check_eval_passes(lambda: (4, 2))
    assert not fb.passed and "makes 8 passes" in fb.message
    fb = ch08.check_eval_passes(lambda: (8, 1))
    assert not fb.passed and "folded version makes 2" in fb.message
    assert not ch08.check_eval_passes(lambda: (None, 2)).passed
    assert not ch08.check_eval_passes(lambda: 8).passed
    assert str(ch08.check_eval_passes(_todo)).startswith("[TODO]")


def test_eval_kernel():
    assert ch08.check_eval_kernel(ch08.eval_batch_norm_reference).passed
    assert str(ch08.check_eval_kernel(_todo)).startswith("[TODO]")

    def wrong_channel(x, mean, var, w, b, eps):       # channel index taken as i % C
        flat = torch.arange(x.numel()) % x.shape[1]
        s = (w / torch.sqrt(var + eps))[flat].reshape(x.shape)
        t = (b - mean * w / torch.sqrt(var + eps))[flat].reshape(x.shape)
        return x * s + t

    fb = ch08.check_eval_kernel(wrong_channel)
    assert not fb.passed and "(i // L) % C" in fb.message

    def no_tail(x, mean, var, w, b, eps):
        y = ch08.eval_batch_norm_reference(x, mean, var, w, b, eps)
        y.view(-1)[-3:] = 0.0
        return y

    fb = ch08.check_eval_kernel(no_tail)
    assert not fb.passed and "mask on the last block" in fb.message

    def in_place(x, mean, var, w, b, eps):
        x.mul_(1.0)
        x.view(-1)[0] += 1.0
        return x

    fb = ch08.check_eval_kernel(in_place)
    assert not fb.passed and "in place" in fb.message


def test_merge_statistics():
    assert ch08.check_merge_statistics(ch08.merge_statistics_reference).passed

    def no_between_term(counts, means, variances):
        counts = np.asarray(counts, float)
        return counts.sum(), (counts[:, None] * means).sum(0) / counts.sum(), \
            (counts[:, None] * variances).sum(0) / counts.sum()

    fb = ch08.check_merge_statistics(no_between_term)
    assert not fb.passed and "spread of the group means" in fb.message

    def plain_mean(counts, means, variances):
        n, _, var = ch08.merge_statistics_reference(counts, means, variances)
        return n, means.mean(0), var

    fb = ch08.check_merge_statistics(plain_mean)
    assert not fb.passed and "weigh each by its count" in fb.message
    assert str(ch08.check_merge_statistics(_todo)).startswith("[TODO]")


def _plan(shape, block_n, block_l, *, ceil=True, padded=True):
    # a student's answer, written out (not the reference object)
    N, C = shape[0], shape[1]
    L = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    gn = -(-N // block_n) if ceil else N // block_n
    gl = -(-L // block_l) if ceil else L // block_l
    largest = ((gn * block_n - 1) * C * L + (C - 1) * L + gl * block_l - 1) if padded else N * C * L - 1
    return gn * gl * C, gn * gl, largest > 2**31 - 1


def test_split_plan(monkeypatch):
    import bnlib.kernels as K

    for shape in [(256, 64, 56, 56), (7, 3, 5, 5), (64, 64, 16, 16), (4096, 64, 112, 112)]:
        p = K.launch_plan(shape)                        # the reference agrees with the kernels' own plan
        assert ch08.split_plan_reference(shape, p.block_a, p.block_b) == (p.programs, p.tiles, p.int64)
    assert ch08.check_split_plan(_plan).passed
    assert str(ch08.check_split_plan(_todo)).startswith("[TODO]")
    fb = ch08.check_split_plan(lambda s, n, l: _plan(s, n, l, ceil=False))
    assert not fb.passed and "round up" in fb.message
    fb = ch08.check_split_plan(lambda s, n, l: _plan(s, n, l, padded=False))
    assert not fb.passed and "masked lanes" in fb.message
    fb = ch08.check_split_plan(lambda s, n, l: (_plan(s, n, l)[1],) + _plan(s, n, l)[1:])
    assert not fb.passed and "multiply by C" in fb.message
    assert not ch08.check_split_plan(lambda s, n, l: 3).passed
    # an answer fitted to the book's inputs fails on the grader's fresh ones
    book = {}
    monkeypatch.setenv("BNLIB_CHECK_SEED", "0")
    ch08.check_split_plan(lambda s, n, l: book.setdefault((s, n, l), _plan(s, n, l)))
    monkeypatch.setenv("BNLIB_CHECK_SEED", "12345")
    assert not ch08.check_split_plan(lambda s, n, l: book.get((s, n, l), (0, 0, False))).passed
