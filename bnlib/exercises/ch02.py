"""Checks for the exercises of chapter 2 (initialisation).

Each ``check_*`` takes the student's function, runs it on fixed inputs,
prints one line of feedback (PASS, FAIL with the reason, or TODO while the
function still raises ``NotImplementedError``) and returns the ``Feedback``.

* :func:`check_z_std`          - exercise 2.1: std of z = w . x + b, eq. (ch2-var-z)
* :func:`check_init_stds`      - exercise 2.2: Xavier and Kaiming stds from fan-in/fan-out
* :func:`check_kaiming_normal` - exercise 2.3: an initialiser drawing N(0, 2/n_in)
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from bnlib.exercises import check_rng
from bnlib.exercises import ExerciseError, Feedback, expect_scalar, expect_shape, report, run_check


# --- exercise 2.1 --------------------------------------------------------------

def z_std_reference(x: np.ndarray, w_std: float, b_std: float) -> float:
    """Std of z = sum_j w_j x_j + b with w_j ~ N(0, w_std^2), b ~ N(0, b_std^2), all independent."""
    x = np.asarray(x, dtype=np.float64)
    return float(np.sqrt(w_std ** 2 * np.sum(x ** 2) + b_std ** 2))


def check_z_std(z_std: Callable[[np.ndarray, float, float], float]) -> Feedback:
    """Exercise 2.1: ``z_std(x, w_std, b_std)`` returns the std of z for a fixed input x."""

    def body() -> str:
        seed003 = np.r_[np.ones(500), np.zeros(500)]
        cases = [
            ("the initialisation article's neuron, N(0,1) weights", seed003, 1.0, 1.0),
            ("the initialisation article's neuron, N(0,1/n_in) weights", seed003, 1.0 / np.sqrt(1000), 1.0),
            ("no bias", np.ones(10), 0.5, 0.0),
            ("inputs other than 0 and 1", np.array([2.0, -1.0, 0.5, 3.0]), 0.3, 0.2),
            ("random inputs", check_rng(2).normal(size=300), 0.1, 1.0),
        ]
        for label, x, w_std, b_std in cases:
            expected = z_std_reference(x, w_std, b_std)
            got = expect_scalar(f"z_std ({label})", z_std(x.copy(), w_std, b_std))
            if abs(got - expected) <= 1e-9 * max(1.0, expected):
                continue
            hint = ""
            if abs(got - expected ** 2) <= 1e-9 * max(1.0, expected ** 2):
                hint = " - that is the variance; return its square root"
            elif label == "inputs other than 0 and 1" and abs(
                    got - np.sqrt(w_std ** 2 * np.sum(np.abs(x)) + b_std ** 2)) < 1e-9:
                hint = " - Var(c w) = c^2 Var(w): each input enters squared"
            raise ExerciseError(f"case '{label}': got {got:.6g}, expected {expected:.6g}{hint}")
        return ("std sqrt(501) = 22.4 and sqrt(3/2) = 1.22 for the initialisation article's neuron, "
                "and the general case, are right")

    return report(run_check("exercise 2.1 z_std", body))


# --- exercise 2.2 --------------------------------------------------------------

def init_stds_reference(fan_in: int, fan_out: int) -> tuple[float, float]:
    """(Xavier std, Kaiming std): sqrt(2/(fan_in+fan_out)) and sqrt(2/fan_in)."""
    return float(np.sqrt(2.0 / (fan_in + fan_out))), float(np.sqrt(2.0 / fan_in))


def check_init_stds(init_stds: Callable[[int, int], tuple[float, float]]) -> Feedback:
    """Exercise 2.2: ``init_stds(fan_in, fan_out) -> (xavier_std, kaiming_std)``."""

    def body() -> str:
        for fan_in, fan_out in [(784, 256), (256, 256), (100, 10), (30, 1000)]:
            got = init_stds(fan_in, fan_out)
            if got is None:
                raise ExerciseError("init_stds returned None - did you forget a return statement?")
            if not isinstance(got, (tuple, list)) or len(got) != 2:
                raise ExerciseError("init_stds should return a pair (xavier_std, kaiming_std)")
            exp_x, exp_k = init_stds_reference(fan_in, fan_out)
            for what, value, expected in (("Xavier std", got[0], exp_x),
                                          ("Kaiming std", got[1], exp_k)):
                value = expect_scalar(f"{what} for fan_in={fan_in}, fan_out={fan_out}", value)
                if abs(value - expected) <= 1e-9 * expected:
                    continue
                hint = ""
                if abs(value - expected ** 2) <= 1e-9:
                    hint = " - that is the variance; return the standard deviation"
                elif what == "Xavier std" and abs(value - np.sqrt(1.0 / fan_in)) < 1e-9:
                    hint = " - Xavier averages fan_in and fan_out: 2/(fan_in + fan_out)"
                elif what == "Kaiming std" and abs(value - np.sqrt(2.0 / fan_out)) < 1e-9:
                    hint = " - use fan_in (the forward pass), not fan_out"
                elif what == "Kaiming std" and abs(value - np.sqrt(1.0 / fan_in)) < 1e-9:
                    hint = " - ReLU zeroes half its inputs: the factor 2 is missing"
                raise ExerciseError(f"{what} for fan_in={fan_in}, fan_out={fan_out}: "
                                    f"got {value:.6g}, expected {expected:.6g}{hint}")
        return "Xavier and Kaiming stds are right for square and non-square layers"

    return report(run_check("exercise 2.2 init_stds", body))


# --- exercise 2.3 --------------------------------------------------------------

def check_kaiming_normal(kaiming_normal: Callable[[int, int, np.random.Generator], np.ndarray]
                         ) -> Feedback:
    """Exercise 2.3: ``kaiming_normal(n_in, n_out, rng)`` draws an (n_in, n_out) N(0, 2/n_in) matrix."""

    def body() -> str:
        W = expect_shape("kaiming_normal(3, 5, rng)",
                         kaiming_normal(3, 5, check_rng(0)), (3, 5))
        again = np.asarray(kaiming_normal(3, 5, check_rng(0)))
        if not np.array_equal(W, again):
            raise ExerciseError("two calls with the same seed gave different matrices - "
                                "draw the numbers from the rng argument, not np.random")
        other = np.asarray(kaiming_normal(3, 5, check_rng(1)))
        if np.array_equal(W, other):
            raise ExerciseError("different seeds gave the same matrix - use the rng argument")
        for n_in, n_out in [(2000, 500), (500, 2000)]:
            W = expect_shape(f"kaiming_normal({n_in}, {n_out}, rng)",
                             kaiming_normal(n_in, n_out, check_rng(3)),
                             (n_in, n_out)).astype(np.float64)
            expected = np.sqrt(2.0 / n_in)
            std, mean = W.std(), W.mean()
            # 10^6 samples: the sample std is within 0.3% of the true one, the mean within 0.005 std
            if abs(mean) > 0.01 * expected:
                raise ExerciseError(f"({n_in}, {n_out}) weights have mean {mean:.3g}; "
                                    "they should be centred at 0")
            if abs(std / expected - 1.0) > 0.02:
                hint = ""
                if abs(std / np.sqrt(2.0 / n_out) - 1.0) < 0.02:
                    hint = " - you used n_out; Kaiming's forward rule uses n_in"
                elif abs(std / (2.0 / n_in) - 1.0) < 0.02:
                    hint = " - you scaled by the variance 2/n_in; scale by its square root"
                raise ExerciseError(f"({n_in}, {n_out}) weights have std {std:.4g}, expected "
                                    f"sqrt(2/{n_in}) = {expected:.4g}{hint}")
            skew = np.mean(((W - mean) / std) ** 3)
            kurt = np.mean(((W - mean) / std) ** 4)
            if abs(skew) > 0.05 or abs(kurt - 3.0) > 0.1:
                raise ExerciseError(f"the weights do not look normal (skewness {skew:.2f}, "
                                    f"kurtosis {kurt:.2f}; a normal has 0 and 3)")
        # 20 ReLU layers of 300 units keep the scale of the signal
        rng = check_rng(4)
        h = rng.standard_normal((200, 300))
        first = None
        for _ in range(20):
            h = np.maximum(0.0, h @ np.asarray(kaiming_normal(300, 300, rng)))
            first = h.std() if first is None else first
        ratio = h.std() / first
        if not 0.3 < ratio < 3.0:
            raise ExerciseError(f"through 20 ReLU layers the activations' std changed by a "
                                f"factor {ratio:.3g}; it should stay of order 1")
        return (f"shape, seeding and N(0, 2/n_in) are right; 20 ReLU layers change the "
                f"activations' std by a factor {ratio:.2f}")

    return report(run_check("exercise 2.3 kaiming_normal", body, blocks=(
                                 "bnlib.scratch.init:kaiming_normal",
    )))


# --- exercise 2.4 --------------------------------------------------------------

def std_over_depth_reference(x: np.ndarray, scale: float, depth: int, width: int,
                             rng: np.random.Generator) -> np.ndarray:
    """std of the pre-activations z of each of ``depth`` ReLU layers of ``width`` units,
    weights ``scale * rng.standard_normal((n_in, width))`` drawn layer by layer, no biases."""
    h = np.asarray(x, dtype=float)
    out = []
    for layer in range(depth):
        z = h @ (scale * rng.standard_normal((h.shape[1], width)))
        out.append(z.std())
        h = np.maximum(z, 0.0)
    return np.array(out)


def check_std_over_depth(std_over_depth: Callable[..., np.ndarray]) -> Feedback:
    """Exercise 2.4: ``std_over_depth(x, scale, depth, width, rng)`` -> (depth,) stds of z."""

    def body() -> str:
        from bnlib.exercises import check_rng

        rng = check_rng(204)
        for case in range(4):
            n, n_in = int(rng.integers(50, 200)), int(rng.integers(10, 60))
            depth, width = int(rng.integers(3, 9)), int(rng.integers(20, 80))
            scale = float(10 ** rng.uniform(-2.5, 0.0))
            x = rng.standard_normal((n, n_in))
            seed = int(rng.integers(2 ** 31))
            expected = std_over_depth_reference(x, scale, depth, width, np.random.default_rng(seed))
            got = std_over_depth(x.copy(), scale, depth, width, np.random.default_rng(seed))
            label = f"std_over_depth(x {x.shape}, scale={scale:.3g}, depth={depth}, width={width})"
            got = expect_shape(label, got, (depth,)).astype(np.float64)
            if np.allclose(got, expected, rtol=1e-9):
                continue
            hint = ""

            def variant(act=lambda z: np.maximum(z, 0.0), w_scale=scale, of_a=False):
                r, h, out = np.random.default_rng(seed), x, []
                for _ in range(depth):
                    z = h @ (w_scale * r.standard_normal((h.shape[1], width)))
                    h = act(z)
                    out.append((h if of_a else z).std())
                return np.array(out)

            if np.allclose(got, variant(of_a=True), rtol=1e-9):
                hint = " - that is the std of the activations relu(z); the exercise asks for z"
            elif np.allclose(got, variant(act=lambda z: z), rtol=1e-9):
                hint = " - apply the ReLU between the layers"
            elif np.allclose(got, variant(w_scale=scale ** 2), rtol=1e-9):
                hint = " - scale is the weights' standard deviation, not their variance"
            elif np.allclose(got, variant(act=np.tanh), rtol=1e-9):
                hint = " - the layers are ReLU, not tanh"
            raise ExerciseError(f"case {case + 1}, {label}: got {np.round(got, 4)}, "
                                f"expected {np.round(expected, 4)}{hint}")
        ratio = std_over_depth_reference(np.random.default_rng(0).standard_normal((500, 50)),
                                         np.sqrt(2 / 50), 8, 50, np.random.default_rng(1))
        return (f"right for 4 random networks; at Kaiming's scale sqrt(2/50) an 8-layer net of 50 "
                f"keeps z's std between {ratio.min():.2f} and {ratio.max():.2f}")

    return report(run_check("exercise 2.4 std_over_depth", body))
