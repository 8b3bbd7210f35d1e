"""Where batch norm's lead at step 10,000 is resolved: chapter 4's Figure-1 networks at rates 0.1 and 0.3 on the mean loss.

Chapter 4, section "Ioffe and Szegedy's Figure 1".  The chapter's set-up
(rate 0.6 on the mean loss) puts both networks above 90% early, and on the
4,000 offline digits their accuracies at step 10,000 are then equal within
the seeds' interval.  The sweep of :mod:`bnlib.experiments.ioffe_lr` stops at
3,000 steps; this experiment runs the same two networks (same weights, same
batches, :func:`bnlib.experiments.ioffe_lr.run`) for 10,000 steps at the two
rates below the plain network's good range, to see whether a lasting batch-norm
lead appears there: a lead that comes from the plain network's slower rate, not
from a higher ceiling.

Summary: as ``ioffe-lr``'s, ``lecun/{lr}/{kind}/acc/{step}`` and
``lecun/{lr}/{kind}/final`` (test accuracy in eval mode).
"""
from __future__ import annotations

from dataclasses import dataclass

from bnlib.experiments import ioffe_lr

NAME = "ioffe-lead"


@dataclass
class Config(ioffe_lr.Config):
    lrs: tuple = (0.1, 0.3)
    init_stds: tuple = (None,)
    init_lrs: tuple = ()
    steps: int = 10000
    eval_every: int = 1000

    SCALES = {
        "smoke": {"n_train": 1000, "n_test": 300, "lrs": (0.1,), "steps": 200, "eval_every": 100},
        "book": {"lrs": (0.1,), "steps": 2000, "eval_every": 500},
        "paper": {},
    }


class IoffeLeadResult(ioffe_lr.IoffeLrResult):
    """Test accuracy against steps, plain and BN, one panel per rate (shared y-axis)."""

    def plot(self):
        import matplotlib.pyplot as plt

        from bnlib import plots

        c = self.config
        fig, axes = plt.subplots(1, len(c.lrs), figsize=(4.2 * len(c.lrs), 3.2), sharey=True,
                                 squeeze=False)
        for ax, lr in zip(axes[0], c.lrs):
            for kind, label in (("plain", "plain"), ("bn", "BN")):
                h = self.histories["lecun"][f"{lr:g}"][kind]
                ax.plot(h["eval_step"], h["test_acc"], "o-", ms=3, color=plots.color_for(kind),
                        label=label)
            ax.set(title=f"rate {lr:g} (mean loss)", xlabel="step", ylim=(0, 1))
            ax.legend(fontsize=8, loc="lower right")
        axes[0][0].set_ylabel("test accuracy")
        fig.tight_layout()
        return fig


def run(config: Config, progress: bool = False) -> IoffeLeadResult:
    """Both networks at each rate of ``config.lrs`` for ``config.steps`` steps."""
    r = ioffe_lr.run(config, progress=progress)
    return IoffeLeadResult(NAME, config, r.histories, r.headline, r.timings)
