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
