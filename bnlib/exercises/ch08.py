"""Checks for the exercises of chapter 8 (batch norm on the GPU).

* :func:`check_eval_passes`       - exercise 8.1: predict how many activation-sized
  passes over memory eval-mode BN makes written as four PyTorch operations, and
  as the folded ``x * s + t`` (eq. ch8-eval-affine)
* :func:`check_eval_kernel`       - exercise 8.2: an eval-mode batch-norm kernel in
  Triton (runs in Triton's interpreter without a GPU)
* :func:`check_merge_statistics`  - exercise 8.3: combine per-device counts, means
  and variances into the statistics of the whole batch (eq. ch8-merge)
* :func:`check_split_plan`        - exercise 8.4: the grid, the partial sums per
  channel and the offset width of the split reduction, on fresh shapes
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from bnlib.exercises import check_rng
from bnlib.exercises import ExerciseError, Feedback, expect_scalar, expect_shape, report, run_check

__all__ = ["check_eval_passes", "check_eval_kernel", "check_merge_statistics", "check_split_plan",
           "eval_passes_reference", "eval_batch_norm_reference", "merge_statistics_reference",
           "split_plan_reference"]


# --- exercise 8.1 --------------------------------------------------------------

def eval_passes_reference() -> tuple[float, float]:
    """Traced passes of ``(x - mu) / sqrt(var + eps) * gamma + beta`` and of ``x * s + t``."""
    import torch

    from bnlib.torch.traffic import MemoryTrace

    x = torch.randn(32, 16, 8, 8)
    shape = (1, -1, 1, 1)
    mu, var, gamma, beta = torch.zeros(16), torch.ones(16), torch.ones(16), torch.zeros(16)
    with torch.no_grad():
        with MemoryTrace() as four_ops:
            (x - mu.view(shape)) / torch.sqrt(var.view(shape) + 1e-5) * gamma.view(shape) + beta.view(shape)
        s = gamma / torch.sqrt(var + 1e-5)
        t = beta - mu * s
        with MemoryTrace() as folded:
            torch.addcmul(t.view(shape), x, s.view(shape))
    return four_ops.passes(x), folded.passes(x)


def check_eval_passes(predicted_passes: Callable) -> Feedback:
    """Exercise 8.1: ``predicted_passes() -> (four_ops, folded)``, checked against a trace."""

    def body() -> str:
        got = predicted_passes()
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise ExerciseError("predicted_passes should return a pair (four_ops, folded)")
        got4 = expect_scalar("your count for the four-operation version", got[0])
        got1 = expect_scalar("your count for the folded version", got[1])
        exp4, exp1 = (round(v) for v in eval_passes_reference())
        if round(got4) != exp4:
            hint = (" - count a read of x (or of the previous result) and a write of a new tensor "
                    "for each element-wise operation on a tensor the size of x; the per-channel "
                    "vectors are tiny and count as nothing")
            raise ExerciseError(f"the four-operation version makes {exp4} passes, not {got4:g}{hint}")
        if round(got1) != exp1:
            raise ExerciseError(f"the folded version makes {exp1} passes, not {got1:g} - "
                                f"one operation reads x once and writes y once")
        return (f"{exp4} passes against {exp1}: folding BN into one multiply-add cuts the traffic "
                f"{exp4 // exp1}-fold")

    return report(run_check("exercise 8.1 eval-mode passes", body))


# --- exercise 8.2 --------------------------------------------------------------

def eval_batch_norm_reference(x, running_mean, running_var, weight, bias, eps: float = 1e-5):
    """Eval-mode BN with a Triton kernel: one program per block of ``x``'s flat indices."""
    import torch

    from bnlib.kernels import eval_kernel

    x = x.contiguous()
    scale = weight / torch.sqrt(running_var + eps)
    shift = bias - running_mean * scale
    y = torch.empty_like(x)
    L = x[0, 0].numel()
    block = 256
    grid = ((x.numel() + block - 1) // block,)
    eval_kernel.affine_per_channel_kernel[grid](x, y, scale, shift, x.shape[1], L, x.numel(), BLOCK=block)
    return y


def check_eval_kernel(eval_batch_norm: Callable) -> Feedback:
    """Exercise 8.2: ``eval_batch_norm(x, running_mean, running_var, weight, bias, eps)``
    launching the student's Triton kernel; compared with ``torch.nn.functional.batch_norm``."""

    def body() -> str:
        import torch

        import bnlib.kernels as K

        device = "cpu" if K.interpreted() else "cuda"
        g = torch.Generator().manual_seed(int(check_rng(82).integers(2**31)))
        cases = [("(6, 5)", (6, 5)), ("(3, 4, 7)", (3, 4, 7)), ("(2, 3, 9, 11)", (2, 3, 9, 11)),
                 ("(4, 2, 33, 33) (more than one block per channel)", (4, 2, 33, 33))]
        for label, shape in cases:
            C = shape[1]
            x = torch.randn(shape, generator=g).to(device)
            mean = torch.randn(C, generator=g).to(device)
            var = (0.5 + torch.rand(C, generator=g)).to(device)
            weight = torch.randn(C, generator=g).to(device)
            bias = torch.randn(C, generator=g).to(device)
            x_before = x.clone()
            y = eval_batch_norm(x, mean, var, weight, bias, 1e-5)
            if not isinstance(y, torch.Tensor):
                raise ExerciseError(f"for x of shape {label} eval_batch_norm returned "
                                    f"{type(y).__name__}, not a tensor")
            if not torch.equal(x, x_before):
                raise ExerciseError("eval_batch_norm changed x in place; write the result to a new tensor")
            expected = torch.nn.functional.batch_norm(x, mean, var, weight, bias, False, 0.0, 1e-5)
            expect_shape(f"the output for x of shape {label}", y.cpu().numpy(), tuple(shape))
            err = (y - expected).abs()
            if float(err.max()) > 1e-4:
                where = np.unravel_index(int(err.argmax()), tuple(shape))
                channel_only = torch.allclose(
                    y, torch.nn.functional.batch_norm(x, mean.roll(1), var.roll(1), weight.roll(1),
                                                      bias.roll(1), False, 0.0, 1e-5), atol=1e-4)
                hint = (" - the channel of flat index i of an (N, C, L) tensor is (i // L) % C"
                        if not channel_only else " - off by one channel: use (i // L) % C")
                if float(err.flatten()[: y.numel() // 2].max()) < 1e-4:
                    hint = " - the first half is right: check the mask on the last block"
                raise ExerciseError(f"for x of shape {label} the largest error is {float(err.max()):.2e} "
                                    f"at index {tuple(int(i) for i in where)}{hint}")
        return "matches torch.nn.functional.batch_norm in eval mode for 2-D, 3-D and 4-D input"

    return report(run_check("exercise 8.2 eval-mode kernel", body))


# --- exercise 8.3 --------------------------------------------------------------

def merge_statistics_reference(counts, means, variances) -> tuple[float, np.ndarray, np.ndarray]:
    """Count, mean and biased variance of the union of groups (eq. ch8-merge)."""
    counts = np.asarray(counts, float)
    means, variances = np.asarray(means, float), np.asarray(variances, float)
    n = counts.sum()
    mean = (counts[:, None] * means).sum(axis=0) / n
    var = (counts[:, None] * (variances + (means - mean) ** 2)).sum(axis=0) / n
    return n, mean, var


def check_merge_statistics(merge_statistics: Callable) -> Feedback:
    """Exercise 8.3: ``merge_statistics(counts, means, variances) -> (count, mean, var)``."""

    def body() -> str:
        rng = check_rng(83)
        sizes = [5, 17, 2, 40]
        groups = [rng.normal(loc, 1 + k, size=(n, 3)) for k, (n, loc) in enumerate(zip(sizes, (-3, 0, 4, 1)))]
        counts = [len(g) for g in groups]
        means = np.stack([g.mean(axis=0) for g in groups])
        variances = np.stack([g.var(axis=0) for g in groups])
        got = merge_statistics(list(counts), means.copy(), variances.copy())
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise ExerciseError("merge_statistics should return (count, mean, var)")
        count = expect_scalar("the count", got[0])
        mean = expect_shape("the mean", got[1], (3,)).astype(float)
        var = expect_shape("the variance", got[2], (3,)).astype(float)
        union = np.concatenate(groups)
        if count != len(union):
            raise ExerciseError(f"the count is {count:g}, the groups hold {len(union)} values")
        if np.abs(mean - union.mean(axis=0)).max() > 1e-10:
            hint = (" - that is the plain average of the group means; weigh each by its count"
                    if np.allclose(mean, means.mean(axis=0)) else "")
            raise ExerciseError(f"the mean is off by {np.abs(mean - union.mean(axis=0)).max():.2e}{hint}")
        err = np.abs(var - union.var(axis=0)).max()
        if err > 1e-9:
            hint = ""
            if np.allclose(var, (np.array(counts)[:, None] * variances).sum(axis=0) / len(union)):
                hint = (" - the weighted mean of the variances misses the spread of the group means: "
                        "add count * (group mean - overall mean)**2 for each group")
            elif np.allclose(var, union.var(axis=0, ddof=1)):
                hint = " - that is the unbiased variance; batch norm normalises with the biased one"
            raise ExerciseError(f"the variance is off by {err:.2e}{hint}")
        return "count, mean and variance of the whole batch from the groups' own statistics"

    return report(run_check("exercise 8.3 merge_statistics", body))


# --- exercise 8.4 --------------------------------------------------------------

def split_plan_reference(shape, block_n: int, block_l: int) -> tuple[int, int, bool]:
    """Programs, partial sums per channel and int64 need of the split reduction over contiguous (N, C, *) input.

    Tiles of ``block_n`` examples x ``block_l`` consecutive positions of one
    channel (``bnlib.kernels.batchnorm``'s ``"ncl"`` layout): ``G = ceil(N /
    block_n) * ceil(L / block_l)`` tiles per channel, ``G * C`` programs; the
    largest offset any lane forms, masked lanes of ragged last tiles included,
    is ``(ceil(N / block_n) * block_n - 1) * C * L + (C - 1) * L + ceil(L /
    block_l) * block_l - 1``, and int64 offsets are needed when it exceeds
    ``2**31 - 1``.
    """
    N, C = int(shape[0]), int(shape[1])
    L = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    gn, gl = -(-N // block_n), -(-L // block_l)
    largest = (gn * block_n - 1) * C * L + (C - 1) * L + gl * block_l - 1
    return gn * gl * C, gn * gl, bool(largest > 2**31 - 1)


def check_split_plan(split_plan: Callable) -> Feedback:
    """Exercise 8.4: ``split_plan(shape, block_n, block_l) -> (programs, partials_per_channel, needs_int64)``,
    checked on fresh shapes (small, ragged, and near the int32 limit)."""

    def body() -> str:
        from bnlib.exercises import check_rng

        rng = check_rng(84)
        cases = []
        for _ in range(6):                                          # ordinary shapes, ragged tiles
            shape = (int(rng.integers(1, 300)), int(rng.integers(1, 600)),
                     int(rng.integers(1, 60)), int(rng.integers(1, 60)))
            cases.append((shape, int(2 ** rng.integers(0, 4)), int(2 ** rng.integers(5, 11))))
        for _ in range(4):                                          # data that fit int32, padded lanes that may not
            C, H = int(rng.integers(16, 512)), int(rng.integers(7, 60))
            block_n = int(2 ** rng.integers(2, 4))
            N = (2**31 - 1) // (C * H * H) - int(rng.integers(0, 3))
            cases.append(((N, C, H, H), block_n, int(2 ** rng.integers(6, 11))))
        cases.append(((2**15 + 1, 2**16), 4, 1))                     # 2-D input: L = 1
        for shape, block_n, block_l in cases:
            got = split_plan(shape, block_n, block_l)
            if not isinstance(got, (tuple, list)) or len(got) != 3:
                raise ExerciseError("split_plan should return (programs, partials_per_channel, needs_int64)")
            programs = expect_scalar(f"the number of programs for {shape}", got[0])
            partials = expect_scalar(f"the partial sums per channel for {shape}", got[1])
            exp_programs, exp_partials, exp_int64 = split_plan_reference(shape, block_n, block_l)
            where = f"for shape {shape} with tiles of {block_n} x {block_l}"
            if partials != exp_partials or programs != exp_programs:
                N, C = shape[0], shape[1]
                L = int(np.prod(shape[2:])) if len(shape) > 2 else 1
                hint = ""
                if partials == (N // block_n) * (L // block_l) or partials == max(1, N * L // (block_n * block_l)):
                    hint = " - round up: the last tile along each axis is ragged, and masked, but still a program"
                elif programs == exp_partials:
                    hint = " - every channel has its own tiles: multiply by C"
                raise ExerciseError(f"{where}: expected {exp_programs} programs and {exp_partials} partial sums "
                                    f"per channel, got {programs:g} and {partials:g}{hint}")
            if bool(got[2]) != exp_int64:
                numel = int(np.prod(shape))
                hint = ""
                if bool(got[2]) == (numel - 1 > 2**31 - 1):
                    hint = (" - the data fit in int32, but the masked lanes of the last tiles still compute "
                            "their offsets: take the largest offset of the padded grid")
                raise ExerciseError(f"{where}: needs_int64 should be {exp_int64}{hint}")
        return f"grid, partial sums and offset width right on {len(cases)} fresh shapes"

    return report(run_check("exercise 8.4 split-reduction plan", body,
                            blocks=("bnlib.kernels.batchnorm:launch_plan",)))
