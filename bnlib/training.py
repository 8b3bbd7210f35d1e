"""Training loops shared by the chapters, for ``bnlib.scratch`` models and for PyTorch models.

Chapter 4 trains many small networks with and without batch normalisation;
later chapters train more.  This module holds the one loop they all use, so
that a NumPy network (:mod:`bnlib.scratch`) and a PyTorch network
(``torch.nn.Module``, for example built from :mod:`bnlib.torch` layers) are
trained the same way, from the same mini-batches, and can be compared step for
step:

* :func:`batch_indices`  the shuffled mini-batches (index arrays, epoch by epoch);
* :func:`fit`            mini-batch SGD or Adam with periodic evaluation, early
  stopping at a target accuracy, divergence detection, optional *ghost batches*
  (batch norm over sub-batches) and wall-clock timing of the training steps;
* :func:`predict`, :func:`accuracy`, :func:`evaluate`  inference in eval mode;
* :func:`to_torch`       a PyTorch copy of a ``bnlib.scratch`` network with the
  same parameters and running statistics (``bnlib.torch.BatchNorm1d`` for
  ``BatchNorm``), the basis of the NumPy-versus-PyTorch agreement checks, with
  :func:`parameters_as_numpy` and :func:`max_parameter_difference` to compare;
* :func:`cpu_threads`    limit BLAS and PyTorch CPU threads for a block of code.

Importing this module does not import PyTorch; the PyTorch paths import it
when they are used.

Why :func:`cpu_threads`: the matrices of these networks are small (a batch of
60 times 784 inputs), and a multi-threaded BLAS spends more time coordinating
threads than computing, much more so on a machine whose cores are busy with
other work.  One thread per process is usually the fastest for them.
"""
from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

__all__ = ["History", "accuracy", "batch_indices", "cpu_threads", "evaluate", "fit",
           "is_torch_model", "make_optimizer", "max_parameter_difference",
           "parameters_as_numpy", "predict", "set_training", "to_torch"]


# --------------------------------------------------------------------------- utilities

def is_torch_model(model) -> bool:
    """True for a ``torch.nn.Module`` (checked without importing PyTorch)."""
    if "torch" not in sys.modules:
        return False
    import torch

    return isinstance(model, torch.nn.Module)


def set_training(model, training: bool) -> bool:
    """Put ``model`` in training (True) or eval (False) mode; return the previous mode."""
    previous = bool(getattr(model, "training", True))
    model.train(training)
    return previous


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Run a block with at most ``n`` BLAS threads (and ``n`` PyTorch CPU threads).

    ``n=None`` changes nothing.  Used by the experiments for the small matrices
    of chapter 4's networks, where one thread is fastest (module docstring).
    """
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"threads must be a positive integer or None; got {n}")
    from threadpoolctl import threadpool_limits

    torch_threads = None
    if "torch" in sys.modules:
        import torch

        torch_threads = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)


def batch_indices(n: int, batch_size: int, steps: int,
                  rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Yield ``steps`` index arrays of ``batch_size`` examples out of ``n``.

    Sampling without replacement within an epoch: each epoch is a fresh random
    permutation of ``range(n)`` cut into consecutive batches; an incomplete
    last batch is dropped, so every batch has exactly ``batch_size`` examples
    (batch norm's statistics always come from the same number of examples).
    The same ``rng`` state gives the same batches, whichever backend consumes them.
    """
    if batch_size < 1 or batch_size > n:
        raise ValueError(f"batch_size must be between 1 and the number of examples ({n}); "
                         f"got {batch_size}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0; got {steps}")
    per_epoch = n // batch_size
    done = 0
    while done < steps:
        order = rng.permutation(n)
        for k in range(min(per_epoch, steps - done)):
            yield order[k * batch_size:(k + 1) * batch_size]
        done += min(per_epoch, steps - done)


# --------------------------------------------------------------------------- inference

def predict(model, x: np.ndarray, batch_size: int | None = None, device: str | None = None
            ) -> np.ndarray:
    """The model's outputs for ``x`` in eval mode, as a NumPy array (mode restored after).

    Works for ``bnlib.scratch`` layers and for ``torch.nn.Module``s (``x`` may
    then be a NumPy array or a tensor; ``device`` defaults to the model's).
    ``batch_size`` splits ``x`` into chunks to bound memory.
    """
    n = len(x)
    chunks = [slice(0, n)] if not batch_size else \
        [slice(i, min(n, i + batch_size)) for i in range(0, n, batch_size)]
    previous = set_training(model, False)
    try:
        if is_torch_model(model):
            import torch

            param = next(model.parameters(), None)
            device = device or (param.device if param is not None else "cpu")
            dtype = param.dtype if param is not None else torch.float64
            xt = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
            xt = xt.to(device=device, dtype=dtype)
            with torch.no_grad():
                return np.concatenate([model(xt[s]).cpu().numpy() for s in chunks])
        with np.errstate(over="ignore", invalid="ignore"):
            return np.concatenate([model.forward(np.asarray(x)[s]) for s in chunks])
    finally:
        set_training(model, previous)


def _fraction_correct(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose largest output is the label; a row with NaN or inf counts as wrong."""
    finite = np.all(np.isfinite(logits), axis=1)
    return float(np.mean(finite & (np.nan_to_num(logits).argmax(axis=1) == labels)))


def accuracy(model, x: np.ndarray, labels: np.ndarray, batch_size: int | None = None) -> float:
    """Fraction of examples whose largest output is the label (eval mode); non-finite rows are wrong."""
    labels = np.asarray(labels)
    if len(labels) != len(x):
        raise ValueError(f"x has {len(x)} examples but labels has {len(labels)}")
    return _fraction_correct(predict(model, x, batch_size), labels)


def evaluate(model, x: np.ndarray, labels: np.ndarray, batch_size: int | None = None
             ) -> dict[str, float]:
    """``{"loss": mean cross-entropy, "acc": accuracy}`` of a classifier in eval mode."""
    from bnlib.scratch.losses import softmax_cross_entropy

    logits = predict(model, x, batch_size)
    if not np.all(np.isfinite(logits)):
        return {"loss": float("nan"), "acc": _fraction_correct(logits, labels)}
    loss, _ = softmax_cross_entropy(logits, labels)
    return {"loss": float(loss), "acc": _fraction_correct(logits, labels)}


# --------------------------------------------------------------------------- optimisers

def make_optimizer(model, name: str = "sgd", lr: float = 0.01, **kwargs):
    """``"sgd"`` or ``"adam"`` for ``model``: ``bnlib.scratch.optim`` or ``torch.optim``.

    Both libraries follow PyTorch's conventions, so the same hyper-parameters
    (``lr``, ``momentum``, ``betas``, ``eps``) give the same updates.
    """
    name = name.lower()
    if name not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam'; got {name!r}")
    if is_torch_model(model):
        import torch

        cls = torch.optim.SGD if name == "sgd" else torch.optim.Adam
        return cls(model.parameters(), lr=lr, **kwargs)
    from bnlib.scratch.optim import SGD, Adam

    return (SGD if name == "sgd" else Adam)(model.params(), lr=lr, **kwargs)


# --------------------------------------------------------------------------- the loop

@dataclass
class History:
    """What :func:`fit` recorded.

    * ``loss``: training loss of every step (the mini-batch's mean loss);
    * ``eval_step``: the steps at which the model was evaluated (0 = before training);
    * ``test_acc``: accuracy on the evaluation set at those steps;
    * ``monitor``: ``{key: list}`` of whatever ``monitor(model)`` returned at those steps;
    * ``train_seconds``: wall time of the training steps only (no evaluation);
    * ``steps``: steps taken; ``reached_step``: first evaluation step with
      accuracy >= ``stop_at_acc`` (None if never); ``diverged``: the loss or
      the parameters became non-finite (training stopped there).
    """

    loss: list = field(default_factory=list)
    eval_step: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)
    monitor: dict = field(default_factory=dict)
    train_seconds: float = 0.0
    steps: int = 0
    reached_step: int | None = None
    diverged: bool = False

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.train_seconds if self.train_seconds > 0 else float("nan")

    @property
    def final_test_acc(self) -> float:
        return self.test_acc[-1] if self.test_acc else float("nan")

    def arrays(self) -> dict[str, np.ndarray]:
        """The histories as NumPy arrays (for an experiment's ``Result.histories``)."""
        out = {"loss": np.asarray(self.loss, dtype=float),
               "eval_step": np.asarray(self.eval_step, dtype=int),
               "test_acc": np.asarray(self.test_acc, dtype=float)}
        for key, values in self.monitor.items():
            out[key] = np.asarray(values, dtype=float)
        return out


def _is_overflow_error(err: Exception) -> bool:
    """bnlib's normalisation layers refuse NaN/inf input or input whose variance overflows."""
    text = str(err)
    return "non-finite" in text or "overflow" in text


def _params_finite(model) -> bool:
    if is_torch_model(model):
        import torch

        return all(bool(torch.isfinite(p).all()) for p in model.parameters())
    return all(np.all(np.isfinite(p)) for p in model.params())


def fit(model, x_train: np.ndarray, y_train: np.ndarray, *, steps: int, batch_size: int,
        optimizer: str = "sgd", lr: float = 0.01, optimizer_kwargs: dict | None = None,
        rng: np.random.Generator | int | None = 0,
        x_eval: np.ndarray | None = None, y_eval: np.ndarray | None = None,
        eval_every: int = 100, monitor: Callable[[Any], dict] | None = None,
        stop_at_acc: float | None = None, ghost_batch_size: int | None = None,
        threads: int | None = None, progress: bool = False, desc: str = "") -> History:
    """Train a classifier with mini-batch SGD or Adam on softmax cross-entropy.

    Parameters
    ----------
    model : a ``bnlib.scratch`` network (``forward``/``backward``/``params``/
        ``grads``) or a ``torch.nn.Module``; trained in place.
    x_train, y_train : NumPy arrays, examples along axis 0, integer labels.
    steps, batch_size : number of optimiser steps and examples per step
        (mini-batches from :func:`batch_indices` with ``rng``).
    optimizer, lr, optimizer_kwargs : see :func:`make_optimizer`.
    x_eval, y_eval, eval_every : test accuracy (eval mode) is recorded before
        training, every ``eval_every`` steps and after the last step.
    monitor : optional ``f(model) -> dict`` called at the same evaluation
        points (in eval mode); its values are collected in ``History.monitor``.
    stop_at_acc : stop at the first evaluation whose accuracy reaches it.
    ghost_batch_size : if set, each mini-batch is cut into sub-batches of this
        size, the forward and backward passes run on each sub-batch separately
        (so batch norm normalises with the sub-batch's statistics) and their
        gradients are averaged into one step: the optimisation step is that of
        the whole mini-batch, only the normalisation noise changes.
    threads : limit CPU threads (:func:`cpu_threads`) while training.

    The NumPy and the PyTorch paths consume ``rng`` identically, so two copies
    of a network (see :func:`to_torch`) trained with the same seed see the same
    batches.  Non-finite loss or parameters stop training with
    ``History.diverged = True``.
    """
    from bnlib.progress import progress as progress_bar

    if steps < 0 or eval_every < 1:
        raise ValueError("steps must be >= 0 and eval_every >= 1")
    if len(x_train) != len(y_train):
        raise ValueError(f"x_train has {len(x_train)} examples but y_train has {len(y_train)}")
    if ghost_batch_size is not None and (ghost_batch_size < 2 or batch_size % ghost_batch_size):
        raise ValueError(f"ghost_batch_size must be >= 2 and divide batch_size={batch_size}; "
                         f"got {ghost_batch_size}")
    if (x_eval is None) != (y_eval is None):
        raise ValueError("give both x_eval and y_eval, or neither")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    torch_model = is_torch_model(model)
    step_fn = _torch_stepper(model, x_train, y_train) if torch_model else \
        _numpy_stepper(model, x_train, y_train)
    opt = make_optimizer(model, optimizer, lr, **(optimizer_kwargs or {}))
    history = History()
    sync = _synchronizer(model) if torch_model else (lambda: None)

    def record(step: int) -> bool:
        history.eval_step.append(step)
        if x_eval is not None:
            try:
                acc = float("nan") if history.diverged else accuracy(model, x_eval, y_eval)
            except ValueError as err:                 # non-finite activations in eval mode
                if _params_finite(model) and not _is_overflow_error(err):
                    raise
                history.diverged, acc = True, float("nan")
            history.test_acc.append(acc)
        if monitor is not None and not history.diverged:
            previous = set_training(model, False)
            try:
                for key, value in monitor(model).items():
                    history.monitor.setdefault(key, []).append(value)
            finally:
                set_training(model, previous)
        elif monitor is not None:                     # keep the lists aligned with eval_step
            for values in history.monitor.values():
                values.append(np.full_like(np.asarray(values[-1], dtype=float), np.nan))
        reached = (stop_at_acc is not None and history.test_acc
                   and history.test_acc[-1] >= stop_at_acc)
        if reached and history.reached_step is None:
            history.reached_step = step
        return bool(reached)

    with cpu_threads(threads), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        set_training(model, True)
        if record(0):
            return history
        bar = progress_bar(total=steps, desc=desc, enabled=progress)
        start = time.perf_counter()
        for step, idx in enumerate(batch_indices(len(x_train), batch_size, steps, rng), 1):
            try:
                loss = step_fn(opt, idx, ghost_batch_size)
            except (ValueError, FloatingPointError) as err:
                if _params_finite(model) and not _is_overflow_error(err):
                    raise
                loss = float("nan")        # BN refused non-finite or overflowing input
            history.loss.append(loss)
            history.steps = step
            bar.update(1)
            if not np.isfinite(loss):
                history.diverged = True
            if history.diverged or step % eval_every == 0 or step == steps:
                sync()
                history.train_seconds += time.perf_counter() - start
                stop = record(step) or history.diverged
                start = time.perf_counter()
                if stop:
                    break
        bar.close()
    return history


def _numpy_stepper(model, x: np.ndarray, y: np.ndarray):
    from bnlib.scratch.losses import softmax_cross_entropy

    grads = model.grads()

    def step(opt, idx, ghost):
        xb, yb = x[idx], y[idx]
        if ghost is None:
            loss, dlogits = softmax_cross_entropy(model.forward(xb), yb)
            model.backward(dlogits)
            opt.step(grads)
            return loss
        total = [np.zeros_like(g) for g in grads]
        losses = []
        k = len(idx) // ghost
        for j in range(k):
            part = slice(j * ghost, (j + 1) * ghost)
            loss, dlogits = softmax_cross_entropy(model.forward(xb[part]), yb[part])
            model.backward(dlogits)
            for t, g in zip(total, grads):
                t += g
            losses.append(loss)
        for t in total:
            t /= k                                # mean of the sub-batch means
        opt.step(total)
        return float(np.mean(losses))

    return step


def _torch_stepper(model, x: np.ndarray, y: np.ndarray):
    import torch
    import torch.nn.functional as F

    param = next(model.parameters())
    xt = torch.as_tensor(np.asarray(x), dtype=param.dtype).to(param.device)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long).to(param.device)

    def step(opt, idx, ghost):
        it = torch.from_numpy(np.asarray(idx)).to(param.device)
        xb, yb = xt[it], yt[it]
        opt.zero_grad(set_to_none=True)
        if ghost is None:
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
        else:
            k = len(idx) // ghost
            loss = sum(F.cross_entropy(model(xc), yc)
                       for xc, yc in zip(xb.split(ghost), yb.split(ghost))) / k
            loss.backward()
        opt.step()
        return loss.item()   # a host sync: keeps the NumPy and PyTorch loops alike

    return step


def _synchronizer(model) -> Callable[[], None]:
    import torch

    param = next(model.parameters(), None)
    if param is not None and param.device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


# --------------------------------------------------------------------------- NumPy -> PyTorch

def to_torch(model, device: str = "cpu", dtype=None):
    """A ``torch.nn.Sequential`` copy of a ``bnlib.scratch`` network, same numbers.

    ``Linear`` becomes ``torch.nn.Linear`` (weight ``W.T``), ``BatchNorm``
    becomes :class:`bnlib.torch.BatchNorm1d` (gamma, beta, running statistics,
    ``num_batches_tracked``, ``eps`` and ``momentum`` copied), ``LayerNorm``
    :class:`bnlib.torch.LayerNorm`, and the activations their ``torch.nn``
    namesakes.  ``dtype`` defaults to ``torch.float64`` (the NumPy precision).
    The copy starts in the original's mode (training or eval).
    """
    import torch
    from torch import nn

    import bnlib.torch as bt
    from bnlib import scratch

    dtype = dtype or torch.float64
    layers = model.layers if isinstance(model, scratch.Sequential) else [model]

    def tensor(a):
        return torch.as_tensor(np.array(a, dtype=np.float64), dtype=dtype, device=device)

    out = []
    for i, layer in enumerate(layers):
        if isinstance(layer, scratch.Linear):
            lin = nn.Linear(layer.n_in, layer.n_out, bias=layer.b is not None,
                            device=device, dtype=dtype)
            with torch.no_grad():
                lin.weight.copy_(tensor(layer.W.T))
                if layer.b is not None:
                    lin.bias.copy_(tensor(layer.b))
            out.append(lin)
        elif isinstance(layer, scratch.BatchNorm):
            bn = bt.BatchNorm1d(layer.num_features, eps=layer.eps, momentum=layer.momentum,
                                device=device, dtype=dtype)
            with torch.no_grad():
                bn.weight.copy_(tensor(layer.gamma))
                bn.bias.copy_(tensor(layer.beta))
                bn.running_mean.copy_(tensor(layer.running_mean))
                bn.running_var.copy_(tensor(layer.running_var))
                bn.num_batches_tracked.fill_(int(layer.num_batches_tracked))
            out.append(bn)
        elif isinstance(layer, scratch.LayerNorm):
            ln = bt.LayerNorm(layer.normalized_shape, eps=layer.eps, device=device, dtype=dtype)
            with torch.no_grad():
                ln.weight.copy_(tensor(layer.gamma))
                ln.bias.copy_(tensor(layer.beta))
            out.append(ln)
        elif isinstance(layer, scratch.ReLU):
            out.append(nn.ReLU())
        elif isinstance(layer, scratch.Tanh):
            out.append(nn.Tanh())
        elif isinstance(layer, scratch.Sigmoid):
            out.append(nn.Sigmoid())
        elif isinstance(layer, scratch.Identity):
            out.append(nn.Identity())
        else:
            raise ValueError(f"to_torch: layer {i} ({layer!r}) has no PyTorch counterpart here")
    net = nn.Sequential(*out)
    net.train(bool(getattr(model, "training", True)))
    return net


def parameters_as_numpy(model) -> list[np.ndarray]:
    """The parameters of a scratch or PyTorch network as NumPy arrays, in scratch layout.

    PyTorch ``Linear`` weights are transposed to the ``(n_in, n_out)`` layout of
    ``bnlib.scratch.Linear``, so the two lists line up for comparison.
    """
    if not is_torch_model(model):
        return [np.array(p) for p in model.params()]
    import torch

    out = []
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            out.append(module.weight.detach().cpu().numpy().T.copy())
            if module.bias is not None:
                out.append(module.bias.detach().cpu().numpy().copy())
        elif list(module.children()) == [] and any(True for _ in module.parameters(recurse=False)):
            out += [p.detach().cpu().numpy().copy() for p in module.parameters(recurse=False)]
    return out


def max_parameter_difference(a, b) -> float:
    """Largest absolute difference between the parameters of two networks (either backend)."""
    pa, pb = parameters_as_numpy(a), parameters_as_numpy(b)
    if len(pa) != len(pb) or any(x.shape != y.shape for x, y in zip(pa, pb)):
        raise ValueError("the two networks do not have the same parameter shapes")
    return max(float(np.max(np.abs(x - y))) for x, y in zip(pa, pb))

