"""Pre-LN versus Post-LN transformers (Xiong et al. 2020), and Pre-RMSNorm: gradient norms at initialisation and training with and without warm-up on a sorting task.

Chapter 6, section 6.6.  A small transformer encoder
(:class:`bnlib.torch.transformer.TinyTransformer`, ``depth`` blocks of width
``d`` with ``heads`` heads) learns to sort ``length`` digits from ``0 .. vocab-1``
(every position predicts the token at that position of the sorted sequence;
cross-entropy).  Batches are drawn fresh at every step; the test accuracy is
the share of correct tokens on ``n_test`` held-out sequences.

Arms: ``post-ln`` (the original block, normalisation on the residual path),
``pre-ln`` (Xiong et al.'s Pre-LN, with a final LayerNorm) and ``pre-rms``
(Pre-LN with RMSNorm, as in recent large language models).

1. At initialisation, the gradient norm of every block's second feed-forward
   matrix, averaged over ``grad_batches`` batches (Xiong et al.'s Figure 3:
   Post-LN's grows towards the output, Pre-LN's does not).
2. Training with Adam (betas 0.9, 0.98, as in Xiong et al.) at the peak
   learning rate ``lr`` for ``steps`` steps, with the learning rate constant
   from the first step (no warm-up) or raised linearly from ``lr / warmup`` to
   ``lr`` over the first ``warmup`` steps.  Same initial weights (per
   architecture) and same batches in every arm.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnlib.experiments import base
from bnlib.experiments.base import ExperimentConfig, Result, Timer

NAME = "prenorm"

ARCHS = {"post-ln": ("post", "ln"), "pre-ln": ("pre", "ln"), "pre-rms": ("pre", "rms")}
LABELS = {"post-ln": "Post-LN", "pre-ln": "Pre-LN", "pre-rms": "Pre-RMSNorm"}


@dataclass
class Config(ExperimentConfig):
    vocab: int = 10
    length: int = 10
    d: int = 64
    heads: int = 4
    depth: int = 6
    archs: tuple = ("post-ln", "pre-ln", "pre-rms")
    lr: float = 1e-2
    warmup: int = 50
    steps: int = 200
    batch_size: int = 64
    n_test: int = 1000
    grad_batches: int = 8
    threads: int | None = 1

    SCALES = {
        "smoke": {"d": 16, "heads": 2, "depth": 2, "steps": 20, "warmup": 5, "n_test": 200,
                  "grad_batches": 2},
        "book": {},
        "paper": {"steps": 160, "warmup": 40},   # run for several seeds within the CPU budget
    }


def sort_batch(rng: np.random.Generator, n: int, length: int = 10, vocab: int = 10):
    """``n`` random sequences and their sorted versions, as int64 tensors ``(n, length)``."""
    import torch

    x = rng.integers(0, vocab, size=(n, length))
    return torch.as_tensor(x), torch.as_tensor(np.sort(x, axis=1))


class PrenormResult(Result):
    """``histories["grad_norm"][arch]``: per-block gradient norms at initialisation;
    ``histories["loss"][f"{arch}/{warm}"]``: training loss per step (warm = "warmup" or "no_warmup")."""

    def plot(self):
        from bnlib.plots.ch06 import prenorm_figure

        c = self.config
        return prenorm_figure(self.histories["grad_norm"], self.histories["loss"], LABELS,
                              title=f"{c.depth}-block transformer (d {c.d}), sorting {c.length} digits, "
                                    f"Adam peak lr {c.lr:g}, warm-up {c.warmup} steps")


def run(config: Config, progress: bool = False) -> PrenormResult:
    """Gradient norms at initialisation, then train every (architecture, warm-up) arm."""
    import torch

    from bnlib.torch.transformer import TinyTransformer, ffn_grad_norms
    from bnlib.training import cpu_threads

    for arch in config.archs:
        if arch not in ARCHS:
            raise ValueError(f"archs must be among {', '.join(ARCHS)}; got {arch!r}")
    if config.warmup < 1 or config.warmup > config.steps:
        raise ValueError("warmup must be between 1 and steps")

    def build(arch):
        torch.manual_seed(1000 + config.seed)
        placement, norm = ARCHS[arch]
        return TinyTransformer(config.vocab, config.length, config.d, config.heads, config.depth,
                               placement, norm)

    rng_test = np.random.default_rng([config.seed, 1])
    x_test, y_test = sort_batch(rng_test, config.n_test, config.length, config.vocab)
    grad_norm, losses, headline = {}, {}, {"grad_norm": {}, "grad_ratio_last_first": {},
                                             "final_loss": {}, "test_acc": {}, "loss_windows": {}}
    bar = base.progress(total=2 * len(config.archs), desc=NAME, enabled=progress)
    with Timer() as t, cpu_threads(config.threads):
        for arch in config.archs:
            model = build(arch)
            rng = np.random.default_rng([config.seed, 2])
            g = np.mean([ffn_grad_norms(model, *sort_batch(rng, config.batch_size, config.length,
                                                           config.vocab))
                         for _ in range(config.grad_batches)], axis=0)
            grad_norm[arch] = g
            headline["grad_norm"][arch] = {str(i + 1): round(float(v), 5) for i, v in enumerate(g)}
            headline["grad_ratio_last_first"][arch] = round(float(g[-1] / g[0]), 4)
            for warm in ("no_warmup", "warmup"):
                model = build(arch)
                opt = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.98))
                w = config.warmup if warm == "warmup" else 0
                sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s, w=w: min(1.0, (s + 1) / w) if w else 1.0)
                rng = np.random.default_rng([config.seed, 3])
                trace = []
                for _ in range(config.steps):
                    x, y = sort_batch(rng, config.batch_size, config.length, config.vocab)
                    logits = model(x)
                    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, config.vocab), y.reshape(-1))
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()
                    trace.append(loss.item())
                    if not np.isfinite(trace[-1]):
                        break
                with torch.no_grad():
                    acc = float((model(x_test).argmax(-1) == y_test).float().mean())
                key = f"{arch}/{warm}"
                losses[key] = np.asarray(trace)
                tail = max(1, config.steps // 10)
                headline["final_loss"][key] = round(float(np.mean(trace[-tail:])), 4)
                headline["test_acc"][key] = round(acc, 4)
                width = max(1, config.steps // 16)             # the loss curve in 16 windows
                full = np.full(config.steps, np.nan)
                full[:len(trace)] = trace
                windows = full[:16 * width].reshape(-1, width).mean(axis=1)
                headline["loss_windows"][key] = {str((i + 1) * width): round(float(v), 4)
                                                 for i, v in enumerate(windows)}
                bar.update(1)
        bar.close()
    headline["chance_loss"] = round(float(np.log(config.vocab)), 4)
    return PrenormResult(NAME, config, {"grad_norm": grad_norm, "loss": losses}, headline,
                         {"run_s": t.seconds})
