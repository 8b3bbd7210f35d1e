"""Gradient descent on least squares, raw vs standardised features: condition number and iterations to a tolerance.

Chapter 1, equations (ch1-ls-loss) to (ch1-iterations).  The loss

    L(w) = 1/(2N) ||X w - y||^2,   Hessian H = X^T X / N,

is a quadratic bowl whose contours are ellipses with axis ratio
sqrt(kappa), kappa = lambda_max / lambda_min the condition number of H.
Gradient descent with the best constant step, eta = 2 / (lambda_min + lambda_max),
shrinks the excess loss L(w_k) - L* by at most ((kappa - 1)/(kappa + 1))^2 per
step (exactly that for two features), so the number of steps to a relative
tolerance grows like kappa.

Three problems, each solved from w = 0 with its own best step:

* ``two-features``: y = 2 x1 + 0.5 x2 + noise with x1 of std 1 and x2 of std
  ``feature_scale`` (both centred), raw and standardised: the contour plot;
* ``sweep``: the same for a range of feature scales (kappa = scale^2);
* ``wine``: predict the alcohol content of scikit-learn's 178 wines from the 12
  other measurements plus an intercept, raw and standardised.

NumPy only; ``device`` is accepted and ignored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "conditioning"

KINDS = ("raw", "standardized")


@dataclass
class Config(ExperimentConfig):
    n: int = 500                          # examples of the two-feature problem
    feature_scale: float = 10.0           # std of the raw second feature (the first has std 1)
    true_w: tuple = (2.0, 0.5)            # the weights that generate y
    noise_std: float = 1.0
    tol: float = 1e-6                     # stop when (L(w_k) - L*) / (L(w_0) - L*) <= tol
    max_iter: int = 100_000
    sweep_scales: tuple = (1.0, 3.0, 10.0, 30.0, 100.0)
    wine: bool = True

    SCALES = {
        "smoke": {"n": 200, "max_iter": 20_000, "sweep_scales": (1.0, 3.0, 10.0)},
        "book": {},
        "paper": {"n": 10_000, "max_iter": 1_000_000,
                  "sweep_scales": (1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 50.0, 100.0, 200.0, 300.0)},
    }


def hessian(X: np.ndarray) -> np.ndarray:
    """Eq. (ch1-hessian): H = X^T X / N, the Hessian of L(w) = ||X w - y||^2 / (2N)."""
    return X.T @ X / len(X)


def condition_number(X: np.ndarray) -> float:
    """kappa = lambda_max / lambda_min of the Hessian X^T X / N (inf if singular)."""
    lam = np.linalg.eigvalsh(hessian(X))
    return float(lam[-1] / lam[0]) if lam[0] > 0 else float("inf")


def best_step(X: np.ndarray) -> float:
    """The constant step 2 / (lambda_min + lambda_max) that minimises the worst contraction."""
    lam = np.linalg.eigvalsh(hessian(X))
    return float(2.0 / (lam[0] + lam[-1]))


def predicted_iterations(kappa: float, tol: float) -> int:
    """Eq. (ch1-iterations): smallest k with ((kappa - 1)/(kappa + 1))^(2k) <= tol."""
    if kappa < 1 or not 0 < tol < 1:
        raise ValueError(f"need kappa >= 1 and 0 < tol < 1; got {kappa}, {tol}")
    if kappa == 1:
        return 1
    rho = (kappa - 1.0) / (kappa + 1.0)
    return int(math.ceil(math.log(tol) / (2.0 * math.log(rho)) - 1e-9))


def gradient_descent(X: np.ndarray, y: np.ndarray, lr: float, *, tol: float = 1e-6,
                     max_iter: int = 100_000, w0: np.ndarray | None = None,
                     keep_path: bool = True) -> dict:
    """Minimise L(w) = ||X w - y||^2 / (2N) by w <- w - lr * X^T (X w - y) / N.

    The gradient X^T (X w - y) / N equals H w - X^T y / N (eq. ch1-ls-grad),
    computed that way so that a step costs a D x D product, whatever N is.
    Stops at the first iteration whose relative excess loss
    (L(w_k) - L*) / (L(w_0) - L*) is at most ``tol``, or after ``max_iter``
    steps, or when the loss grows past 1e12 times its start (divergence).
    Returns ``iterations`` (None if the tolerance was not reached), the
    ``excess`` of every iterate, the ``path`` of the weights (if
    ``keep_path``), ``w``, ``w_star`` and ``diverged``.
    """
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64).ravel()
    H = hessian(X)
    g0 = X.T @ y / len(X)
    w_star = np.linalg.lstsq(X, y, rcond=None)[0]
    w = np.zeros(X.shape[1]) if w0 is None else np.array(w0, dtype=np.float64)

    def excess(v):                         # L(v) - L* = (v - w*)^T H (v - w*) / 2
        e = v - w_star
        return 0.5 * float(e @ H @ e)

    e0 = excess(w)
    if e0 == 0:
        raise ValueError("w0 is already the minimiser")
    rel, path = [1.0], [w.copy()] if keep_path else []
    iterations, diverged = None, False
    for k in range(1, max_iter + 1):
        w = w - lr * (H @ w - g0)
        r = excess(w) / e0
        rel.append(r)
        if keep_path:
            path.append(w.copy())
        if r <= tol:
            iterations = k
            break
        if not np.isfinite(r) or r > 1e12:
            diverged = True
            break
    return {"iterations": iterations, "excess": np.asarray(rel), "w": w, "w_star": w_star,
            "path": np.asarray(path) if keep_path else None, "diverged": diverged}


def two_feature_data(config: Config, feature_scale: float | None = None):
    """The two-feature problem: centred x1 (std 1), x2 (std ``feature_scale``), y = X w_true + noise."""
    s = config.feature_scale if feature_scale is None else feature_scale
    rng = np.random.default_rng([config.seed, 7])
    X = rng.standard_normal((config.n, 2))
    X = (X - X.mean(axis=0)) / X.std(axis=0) * np.array([1.0, s])   # exact stds 1 and s
    y = X @ np.asarray(config.true_w, dtype=np.float64) + config.noise_std * rng.standard_normal(config.n)
    return X, y - y.mean()


def wine_regression():
    """Alcohol (column 0) of the wine data against the other 12 columns plus an intercept column."""
    from bnlib.preprocessing import standardize, wine

    x, _, names = wine()
    y, feats = x[:, 0], x[:, 1:]
    ones = np.ones((len(x), 1))
    raw = np.hstack([ones, feats])
    std = np.hstack([ones, standardize(feats).x_train])
    return {"raw": raw, "standardized": std}, y, names[1:]


def _solve(X, y, config: Config, keep_path: bool) -> tuple[dict, dict]:
    kappa = condition_number(X)
    lr = best_step(X)
    out = gradient_descent(X, y, lr, tol=config.tol, max_iter=config.max_iter, keep_path=keep_path)
    summary = {"kappa": kappa, "lr": lr, "iterations": out["iterations"],
               "predicted_iterations": predicted_iterations(kappa, config.tol),
               "final_rel_excess": float(out["excess"][-1]), "diverged": out["diverged"]}
    return out, summary


class ConditioningResult(Result):
    """``histories["two_features"][kind]``: ``X``, ``y``, ``path``, ``excess``, ``w_star``;
    ``histories["wine"][kind]``: ``excess``; ``histories["sweep"]``: ``scales``, iterations."""

    def plot(self):
        from bnlib import plots

        h = self.histories["two_features"]
        curves = {f"two features, {k}": h[k]["excess"] for k in KINDS}
        if "wine" in self.histories:
            curves.update({f"wine, {k}": self.histories["wine"][k]["excess"] for k in KINDS})
        return plots.gd_contours(
            {k: (h[k]["X"], h[k]["y"], h[k]["path"], h[k]["w_star"]) for k in KINDS},
            curves, tol=self.config.tol,
            titles={k: f"{k} features, κ = {self.headline['two_features'][k]['kappa']:.3g}"
                    for k in KINDS})

    def plot_sweep(self):
        from bnlib import plots

        s = self.headline["sweep"]
        return plots.iterations_vs_scale(
            s["scales"], {"raw": s["raw_iterations"], "standardized": s["standardized_iterations"]},
            predicted=s["raw_predicted"], max_iter=self.config.max_iter, tol=self.config.tol)


def run(config: Config, progress: bool = False) -> ConditioningResult:
    """Solve the two-feature problem, the scale sweep and the wine problem by gradient descent."""
    from bnlib.preprocessing import standardize

    if config.feature_scale <= 0 or min(config.sweep_scales) <= 0:
        raise ValueError("feature scales must be positive")
    if not 0 < config.tol < 1 or config.max_iter < 1:
        raise ValueError("need 0 < tol < 1 and max_iter >= 1")
    histories: dict = {"two_features": {}, "sweep": {}}
    headline: dict = {"two_features": {}}
    timings = {}
    with Timer() as t:
        X, y = two_feature_data(config)
        for kind, Xk in (("raw", X), ("standardized", standardize(X).x_train)):
            out, summ = _solve(Xk, y, config, keep_path=True)
            histories["two_features"][kind] = {"X": Xk, "y": y, **out}
            headline["two_features"][kind] = summ
        tf = headline["two_features"]
        # the step that suits the standardised problem, applied to the raw one
        shared = gradient_descent(X, y, tf["standardized"]["lr"], tol=config.tol,
                                  max_iter=config.max_iter, keep_path=False)
        tf["raw_with_standardized_lr_diverged"] = shared["diverged"]
        tf["speedup"] = tf["raw"]["iterations"] / tf["standardized"]["iterations"] \
            if tf["raw"]["iterations"] and tf["standardized"]["iterations"] else None
    timings["two_features_s"] = t.seconds

    with Timer() as t:
        sweep = {"scales": list(config.sweep_scales), "raw_iterations": [],
                 "standardized_iterations": [], "raw_kappa": [], "raw_predicted": []}
        for s in base.progress(config.sweep_scales, desc="sweep", enabled=progress):
            Xs, ys = two_feature_data(config, s)
            _, raw = _solve(Xs, ys, config, keep_path=False)
            _, std = _solve(standardize(Xs).x_train, ys, config, keep_path=False)
            sweep["raw_iterations"].append(raw["iterations"])
            sweep["standardized_iterations"].append(std["iterations"])
            sweep["raw_kappa"].append(raw["kappa"])
            sweep["raw_predicted"].append(raw["predicted_iterations"])
        headline["sweep"] = sweep
    timings["sweep_s"] = t.seconds

    if config.wine:
        with Timer() as t:
            designs, yw, _ = wine_regression()
            histories["wine"], headline["wine"] = {}, {}
            for kind in KINDS:
                out, summ = _solve(designs[kind], yw, config, keep_path=False)
                histories["wine"][kind] = {"excess": out["excess"]}
                headline["wine"][kind] = summ
        timings["wine_s"] = t.seconds
    return ConditioningResult(NAME, config, histories, headline, timings)
