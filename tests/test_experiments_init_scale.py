"""init-scale (cs231n's weight-scale sweep, plain vs BN) at smoke scale, and its CLI."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnlib import experiments
from bnlib.experiments import init_scale

ROOT = Path(__file__).resolve().parents[1]


def test_registered_and_cs231n_setup():
    assert "init-scale" in experiments.available()
    cfg = init_scale.Config.at_scale("paper")
    s = init_scale.scales(cfg)
    np.testing.assert_allclose(s, np.logspace(-4, 0, num=20))
    assert (cfg.depth, cfg.hidden, cfg.batch_size, cfg.epochs, cfg.lr, cfg.n_train) == (7, 50, 50, 10, 1e-3, 1000)


def test_normal_init_and_band_width():
    w = init_scale.normal_init(0.01)(400, 300, np.random.default_rng(0))
    assert w.shape == (400, 300) and w.std() == pytest.approx(0.01, rel=0.02)
    assert init_scale.band_width([0.1, 0.80, 0.86, 0.9, 0.5], 0.05) == 2
    assert init_scale.band_width([0.9, 0.9], 0.0) == 2


@pytest.fixture(scope="module")
def smoke():
    return experiments.run("init-scale", "smoke")


def test_smoke_summary(smoke):
    s = smoke.summary()
    assert len(s["scales"]) == 4
    for arm in ("plain", "bn"):
        assert len(s[arm]["final_test_acc"]) == 4 and 1 <= s[arm]["n_within"] <= 4
        assert s[arm]["decades_within"] == pytest.approx(s[arm]["n_within"] * 4 / 3, abs=1e-3)
    # at the smallest scale (1e-4) the plain 8-layer net stays at chance; something learns
    assert s["plain"]["final_test_acc"][0] <= 0.15 < max(s["bn"]["final_test_acc"] + s["plain"]["final_test_acc"])
    assert s["width_bn_minus_plain"] == pytest.approx(s["bn"]["decades_within"] - s["plain"]["decades_within"])


def test_cli_writes_json_and_png(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bnlib", "run", "init-scale", "--scale", "smoke",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "init-scale.json").read_text())["summary"]
    assert {"plain", "bn", "scales", "width_bn_minus_plain"} <= set(summary)
    png = (tmp_path / "init-scale.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
