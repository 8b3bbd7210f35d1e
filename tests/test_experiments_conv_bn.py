"""Experiment conv-bn (chapter 3, section 3.10): the CNN with and without BatchNorm2d."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from bnlib import experiments
from bnlib.experiments import conv_bn


def test_registered_and_scales():
    assert "conv-bn" in experiments.available()
    for scale in ("smoke", "book", "paper"):
        conv_bn.Config.at_scale(scale)


def test_network_has_batchnorm2d_only_in_bn_arm():
    import torch

    with_bn = conv_bn.build_network(True, (4, 8))
    without = conv_bn.build_network(False, (4, 8))
    kinds = lambda m: [type(l).__name__ for l in m]
    assert kinds(with_bn).count("BatchNorm2d") == 2 and "BatchNorm2d" not in kinds(without)
    assert all(l.bias is None for l in with_bn if isinstance(l, torch.nn.Conv2d))
    assert with_bn(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_smoke_run_writes_json_and_png(tmp_path):
    result = experiments.run("conv-bn", scale="smoke")
    s = result.summary()
    for arm in conv_bn.ARMS:
        entry = s[arm]["lr_0.05"]
        assert 0.0 <= entry["final_test_acc"] <= 1.0
        assert entry["test_acc_at_30"] == entry["final_test_acc"]
        assert entry["diverged"] == 0
    # both arms saw the same batches: same number of losses, finite
    h = result.histories
    assert len(h["bn"]["lr_0.05"]["loss"]) == len(h["plain"]["lr_0.05"]["loss"]) == 30
    json_path, png_path = result.save(tmp_path)
    assert json.loads(json_path.read_text())["name"] == "conv-bn"
    assert png_path.stat().st_size > 0


def test_same_seed_same_numbers():
    a = experiments.run("conv-bn", scale="smoke", steps=10, eval_every=5, marks=(10,))
    b = experiments.run("conv-bn", scale="smoke", steps=10, eval_every=5, marks=(10,))
    assert a.summary()["bn"] == b.summary()["bn"]
    assert np.array_equal(a.histories["plain"]["lr_0.05"]["loss"],
                          b.histories["plain"]["lr_0.05"]["loss"])


def test_bad_config():
    with pytest.raises(ValueError):
        experiments.run("conv-bn", scale="smoke", lrs=())
