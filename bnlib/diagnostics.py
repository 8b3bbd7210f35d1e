"""Training diagnostics for scratch (bnlib.scratch) and PyTorch models alike.

The panels of Karpathy's "makemore part 3" lecture ("Building makemore Part 3", 2022): per layer, the
distribution of the activations and of their gradients, the saturated and dead shares, the
weights' gradients and the **update:data ratio** over training.  One class does it all::

    from bnlib.diagnostics import Recorder

    rec = Recorder(model)                 # attaches hooks to the activation layers
    for step in range(n_steps):
        loss = ...forward..., ...backward...        # as usual
        rec.record(step, lr)              # after backward, before the optimizer step
        opt.step(...)
    rec.detach()                          # removes the hooks (or use ``with Recorder(model) as rec``)
    rec.history["update_ratio"]           # {layer name: [log10 ratio per recorded step]}
    rec.plot()                            # the four makemore-style panels (bnlib.plots.ch02)

API (kept stable; chapters 2 and 4 use it)
-------------------------------------------
``Recorder(model, slope=0.01, bins=60, histograms=True)``
    ``model``: a :class:`bnlib.scratch.Sequential` (nested ones are walked) or a
    ``torch.nn.Module``.  The *activation layers* it watches are the scratch ``Tanh``,
    ``Sigmoid`` and ``ReLU`` layers, or the ``torch.nn.Tanh``, ``Sigmoid`` and ``ReLU`` modules
    (functional calls such as ``torch.relu`` inside ``forward`` are invisible to it).  The
    *weights* it watches are every 2-D (or higher) weight: scratch ``Linear.W``, torch
    ``Linear``/``Conv`` ``.weight`` (as Karpathy, ``p.ndim == 2``; biases and BN's gamma/beta
    are left out).  Forward passes in evaluation mode (``model.eval()``) are not recorded,
    so test-set evaluations between steps do not overwrite the training batch's values.
``record(step, lr, model=None)``
    Reads what the hooks saw in the last training forward/backward pass and the weights'
    current gradients, appends one entry to ``history`` and (``histograms=True``) one
    :class:`Snapshot` to ``snapshots``.  Returns the :class:`Snapshot`.  Call it after
    ``backward`` and **before** the optimizer step (the update ratio uses the weights the
    step is about to change).  ``lr`` may be a float or a callable of the step.
``history``
    ``{"step": [...], "act_mean", "act_std", "saturated", "dead", "nonfinite", "grad_std":
    {activation layer: [...]}, "weight_std", "weight_grad_std", "grad_data_ratio",
    "update_ratio": {weight name: [...]}}``: one value per recorded step.
``snapshots``
    list of :class:`Snapshot` (``step``, ``layers`` = per activation layer a dict with
    ``act_hist``, ``grad_hist`` (each ``(counts, edges)``) and the scalar statistics,
    ``weights`` = per weight ``grad_hist`` and ratios).
``plot(step=None)``
    The makemore panels for the snapshot at ``step`` (default: the last) and the update
    ratio over all recorded steps: :func:`bnlib.plots.ch02.diagnostics_panels`.
``detach()``
    Removes the hooks.  The recorder is also a context manager.

Definitions (the book's, chapter 1)
-----------------------------------
* **saturated**: a unit-example value whose slope is below ``slope`` (default 0.01, a
  hundredth of tanh's largest slope): ``tanh'(z) = 1 - a^2 < 0.01``, i.e. ``|a| > 0.995``
  and ``|z| > 2.99``; ``sigma'(z) = a (1 - a) < 0.01``, i.e. ``|z| > 4.58``.  ReLU does not
  saturate (its slope is 0 or 1): its ``saturated`` is reported as NaN.
* **dead**: a unit (a feature, one column of the batch) whose slope is below ``slope`` on
  *every* example of the batch: for ReLU ``z <= 0`` on every example, for tanh/sigmoid
  saturated on every example.  Such a unit passes no gradient to its weights on this batch.
* **non-finite**: ``saturated`` and ``dead`` are computed over finite values only (a unit
  with any NaN/inf is left out of ``dead``); the share of non-finite values is reported
  separately as ``nonfinite``, so a diverged network shows as divergence, not as dead units.
* **update:data ratio** of a weight ``W``: ``log10(std(lr * dW) / std(W))``, the statistic
  of makemore part 3 (standard deviations over all entries of the matrix).  It is the size
  of a plain SGD step relative to the weights; Karpathy's rule of thumb puts it near
  ``1e-3``, i.e. -3 on this log scale (the guide line of the plot).  With momentum or Adam
  the actual step differs from ``lr * dW``: the number is then the gradient's scale, not the
  step's.  ``grad_data_ratio`` is ``std(dW) / std(W)`` (no learning rate).
* **gradients of activations**: the gradient of the loss with respect to the activation
  layer's *output* ``a`` (PyTorch: ``a.grad``), as in makemore.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

__all__ = ["Recorder", "Snapshot", "activation_stats", "weight_stats", "SATURATION_SLOPE"]

#: the book's definition of "saturated": slope below this (chapter 1, section 1.2)
SATURATION_SLOPE = 0.01


def _kind_of(layer) -> str | None:
    """'tanh', 'sigmoid', 'relu' or None for a scratch layer or a torch module."""
    name = type(layer).__name__.lower()
    return name if name in ("tanh", "sigmoid", "relu") else None


def _slope(kind: str, z: np.ndarray, a: np.ndarray) -> np.ndarray:
    if kind == "tanh":
        return 1.0 - a * a
    if kind == "sigmoid":
        return a * (1.0 - a)
    return (z > 0).astype(float)


def _hist(values: np.ndarray, bins: int, value_range=None):
    v = values[np.isfinite(values)]
    if v.size == 0:
        return np.zeros(bins, dtype=np.int64), np.linspace(-1.0, 1.0, bins + 1)
    if value_range is None:
        lo, hi = float(v.min()), float(v.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        value_range = (lo, hi)
    counts, edges = np.histogram(v, bins=bins, range=value_range)
    return counts, edges


def _std(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.std()) if v.size else float("nan")


def activation_stats(kind: str, z: np.ndarray, a: np.ndarray, slope: float = SATURATION_SLOPE) -> dict:
    """Statistics of one activation layer on one batch.

    ``z`` is the layer's input (pre-activation), ``a`` its output, both ``(batch, units, ...)``
    (extra axes, e.g. a conv layer's H and W, count as more examples of the same unit).
    Returns ``mean``, ``std`` (of finite ``a``), ``saturated`` (share of finite values with
    slope < ``slope``; NaN for ReLU), ``dead`` (share of units, among those whose values are
    all finite, with slope < ``slope`` on every example), ``nonfinite`` (share of values of
    ``a`` or ``z`` that are NaN or infinite).
    """
    z = np.asarray(z, dtype=float)
    a = np.asarray(a, dtype=float)
    if z.ndim == 1:
        z, a = z[:, None], a[:, None]
    # units along axis 1; everything else is an "example" of that unit
    zz = np.moveaxis(z, 1, -1).reshape(-1, z.shape[1])
    aa = np.moveaxis(a, 1, -1).reshape(-1, a.shape[1])
    finite = np.isfinite(zz) & np.isfinite(aa)
    s = _slope(kind, zz, aa)
    low = (s < slope) & finite
    n_finite = int(finite.sum())
    unit_ok = finite.all(axis=0)
    dead_units = (low | ~finite).all(axis=0) & unit_ok
    af = aa[finite]
    return {
        "mean": float(af.mean()) if af.size else float("nan"),
        "std": float(af.std()) if af.size else float("nan"),
        "saturated": (float("nan") if kind == "relu"
                      else (float(low.sum()) / n_finite if n_finite else float("nan"))),
        "dead": float(dead_units.sum()) / int(unit_ok.sum()) if unit_ok.any() else float("nan"),
        "nonfinite": 1.0 - n_finite / finite.size if finite.size else 0.0,
    }


def weight_stats(w: np.ndarray, dw: np.ndarray, lr: float) -> dict:
    """``weight_std``, ``weight_grad_std``, ``grad_data_ratio = std(dW)/std(W)`` and
    ``update_ratio = log10(std(lr * dW) / std(W))`` (NaN where undefined)."""
    w = np.asarray(w, dtype=float)
    dw = np.asarray(dw, dtype=float)
    sw, sg = _std(w.ravel()), _std(dw.ravel())
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = sg / sw if sw > 0 else float("nan")
        upd = float(np.log10(abs(lr) * sg / sw)) if sw > 0 and sg > 0 and lr != 0 else float("nan")
    return {"weight_std": sw, "weight_grad_std": sg, "grad_data_ratio": float(ratio),
            "update_ratio": upd}


@dataclass
class Snapshot:
    """What :meth:`Recorder.record` saw at one step: ``layers[name]`` (activation layers:
    ``kind``, ``act_hist``, ``grad_hist`` and :func:`activation_stats`' numbers plus
    ``grad_std``) and ``weights[name]`` (``grad_hist`` and :func:`weight_stats`' numbers)."""

    step: int
    lr: float
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: dict[str, dict[str, Any]] = field(default_factory=dict)


class _ScratchTap:
    """Wraps one scratch activation layer's forward/backward (instance attributes)."""

    def __init__(self, layer):
        self.layer, self.z, self.a, self.grad = layer, None, None, None
        fwd, bwd = layer.forward, layer.backward

        def forward(x):
            y = fwd(x)
            if getattr(layer, "training", True):
                self.z, self.a, self.grad = np.array(x, dtype=float), np.array(y, dtype=float), None
            return y

        def backward(dy):
            if getattr(layer, "training", True):
                self.grad = np.array(dy, dtype=float)
            return bwd(dy)

        layer.forward, layer.backward = forward, backward

    def remove(self):
        for attr in ("forward", "backward"):
            self.layer.__dict__.pop(attr, None)


class _TorchTap:
    """A forward hook on one torch activation module; a tensor hook catches ``a.grad``."""

    def __init__(self, module):
        self.layer, self.z, self.a, self.grad = module, None, None, None

        def hook(mod, inputs, output):
            if not mod.training:
                return
            self.z = inputs[0].detach().cpu().double().numpy()
            self.a = output.detach().cpu().double().numpy()
            self.grad = None
            if output.requires_grad:
                def grad_hook(g):
                    self.grad = g.detach().cpu().double().numpy()
                output.register_hook(grad_hook)

        self.handle = module.register_forward_hook(hook)

    def remove(self):
        self.handle.remove()


def _is_torch(model) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is in requirements.txt
        return False
    return isinstance(model, torch.nn.Module)


def _scratch_layers(model, prefix=""):
    """(name, layer) for every leaf layer of a scratch model, nested Sequentials walked."""
    layers = getattr(model, "layers", None)
    if layers is None:
        yield prefix or type(model).__name__, model
        return
    for i, layer in enumerate(layers):
        name = f"{prefix}{i}"
        if getattr(layer, "layers", None) is not None:
            yield from _scratch_layers(layer, prefix=f"{name}.")
        else:
            yield name, layer


class Recorder:
    """Per-layer activation, gradient and update statistics during training.

    See the module docstring for the API and the definitions.  Layer names: the
    ``k``-th activation layer is ``"act k (tanh)"`` (k from 1), the ``k``-th weight matrix
    ``"W k"``; ``names`` and ``weight_names`` list them in order, input to output.
    """

    def __init__(self, model, slope: float = SATURATION_SLOPE, bins: int = 60,
                 histograms: bool = True):
        if not 0 < slope:
            raise ValueError(f"slope must be positive, got {slope}")
        self.model, self.slope, self.bins, self.histograms = model, float(slope), int(bins), histograms
        self.torch = _is_torch(model)
        self._taps: dict[str, Any] = {}
        self._kinds: dict[str, str] = {}
        self._weights: dict[str, Callable[[], tuple]] = {}
        if self.torch:
            leaves = [(n, m) for n, m in model.named_modules() if len(list(m.children())) == 0]
        else:
            leaves = list(_scratch_layers(model))
        k_act = k_w = 0
        for _, layer in leaves:
            kind = _kind_of(layer)
            if kind is not None:
                k_act += 1
                name = f"act {k_act} ({kind})"
                self._taps[name] = _TorchTap(layer) if self.torch else _ScratchTap(layer)
                self._kinds[name] = kind
            elif self.torch:
                w = getattr(layer, "weight", None)
                if w is not None and w.ndim >= 2:
                    k_w += 1
                    self._weights[f"W {k_w}"] = (lambda p=w: (
                        p.detach().cpu().double().numpy(),
                        None if p.grad is None else p.grad.detach().cpu().double().numpy()))
            else:
                w = getattr(layer, "W", None)
                if isinstance(w, np.ndarray) and w.ndim >= 2:
                    k_w += 1
                    self._weights[f"W {k_w}"] = (lambda lay=layer: (lay.W, lay.dW))
        self.names = list(self._taps)
        self.weight_names = list(self._weights)
        self.snapshots: list[Snapshot] = []
        self.history: dict[str, Any] = {"step": []}
        for key in ("act_mean", "act_std", "saturated", "dead", "nonfinite", "grad_std"):
            self.history[key] = {n: [] for n in self.names}
        for key in ("weight_std", "weight_grad_std", "grad_data_ratio", "update_ratio"):
            self.history[key] = {n: [] for n in self.weight_names}

    # ------------------------------------------------------------------ hooks
    def detach(self) -> None:
        """Remove every hook; the recorded history stays."""
        for tap in self._taps.values():
            tap.remove()
        self._taps = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()
        return False

    # ---------------------------------------------------------------- record
    def record(self, step: int, lr, model=None) -> Snapshot:
        """Record the last training forward/backward pass (call before the optimizer step).

        ``lr``: the learning rate of the coming SGD step (a float, or a callable of
        ``step``).  ``model`` is accepted for symmetry with ``Recorder(model)`` and must be
        the same model if given.
        """
        if model is not None and model is not self.model:
            raise ValueError("record(model=...) must be the model the Recorder was built on")
        if not self._taps and self.names:
            raise RuntimeError("this Recorder has been detached")
        lr = float(lr(step) if callable(lr) else lr)
        snap = Snapshot(step=int(step), lr=lr)
        self.history["step"].append(int(step))
        for name, tap in self._taps.items():
            kind = self._kinds[name]
            if tap.a is None:
                raise RuntimeError(f"{name}: no training forward pass seen yet; call record() "
                                   "after forward and backward")
            st = activation_stats(kind, tap.z, tap.a, self.slope)
            st["grad_std"] = _std(tap.grad.ravel()) if tap.grad is not None else float("nan")
            st["kind"] = kind
            if self.histograms:
                rng_a = {"tanh": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}.get(kind)
                st["act_hist"] = _hist(tap.a.ravel(), self.bins, rng_a)
                if tap.grad is not None:
                    st["grad_hist"] = _hist(tap.grad.ravel(), self.bins)
            snap.layers[name] = st
            for key, hkey in (("mean", "act_mean"), ("std", "act_std"), ("saturated", "saturated"),
                              ("dead", "dead"), ("nonfinite", "nonfinite"), ("grad_std", "grad_std")):
                self.history[hkey][name].append(st[key])
        for name, get in self._weights.items():
            w, dw = get()
            if dw is None:
                dw = np.full_like(w, np.nan)
            st = weight_stats(w, dw, lr)
            if self.histograms:
                st["grad_hist"] = _hist(np.asarray(dw, dtype=float).ravel(), self.bins)
            snap.weights[name] = st
            for key in ("weight_std", "weight_grad_std", "grad_data_ratio", "update_ratio"):
                self.history[key][name].append(st[key])
        if self.histograms:
            self.snapshots.append(snap)
        return snap

    # ------------------------------------------------------------------ views
    def snapshot(self, step: int | None = None) -> Snapshot:
        """The snapshot recorded at ``step`` (default: the last one)."""
        if not self.snapshots:
            raise ValueError("no snapshots recorded (histograms=False, or record() never called)")
        if step is None:
            return self.snapshots[-1]
        for s in self.snapshots:
            if s.step == step:
                return s
        raise KeyError(f"no snapshot at step {step}; recorded: {[s.step for s in self.snapshots]}")

    def as_arrays(self) -> dict[str, Any]:
        """``history`` with NumPy arrays instead of lists."""
        out = {"step": np.array(self.history["step"])}
        for key, per in self.history.items():
            if key != "step":
                out[key] = {n: np.array(v, dtype=float) for n, v in per.items()}
        return out

    def plot(self, step: int | None = None, title: str = ""):
        """The four makemore-style panels: :func:`bnlib.plots.ch02.diagnostics_panels`."""
        from bnlib.plots.ch02 import diagnostics_panels

        return diagnostics_panels(self, step=step, title=title)
