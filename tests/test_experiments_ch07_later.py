"""Chapter 7's later explanations and its sweep: each experiment runs at smoke scale and shows its effect.

hessian-spectrum (Ghorbani et al.), grad-explosion (Yang et al.), nf-training
(SkipInit, scaled weight standardisation, AGC), weight-decay (the effective
learning rate) and ics-lr-sweep (the sign flips); each writes JSON and PNG
through the CLI.
"""
import json
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from bnlib import experiments  # noqa: E402

NEW = ("hessian-spectrum", "grad-explosion", "nf-training", "weight-decay", "ics-lr-sweep")


def test_registered():
    names = experiments.available()
    for name in NEW:
        assert name in names


@pytest.mark.parametrize("name", NEW)
def test_cli_smoke_writes_json_and_png(name, tmp_path):
    from bnlib.__main__ import main

    main(["run", name, "--scale", "smoke", "--out", str(tmp_path)])
    data = json.loads((tmp_path / f"{name}.json").read_text())
    assert data["name"] == name and data["summary"]
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
    plt.close("all")


def test_top_eigenvalues_match_a_dense_hessian():
    from bnlib.experiments.hessian_spectrum import top_eigenvalues

    g = torch.Generator().manual_seed(0)
    A = torch.randn(12, 12, generator=g, dtype=torch.float64)
    H = A @ A.T + torch.diag(torch.arange(12, dtype=torch.float64))
    w = torch.zeros(12, dtype=torch.float64, requires_grad=True)
    vals, vecs, n = top_eigenvalues(lambda: 0.5 * w @ H @ w + torch.sum(torch.sin(w) * 0), [w], k=3)
    exp = np.sort(np.linalg.eigvalsh(H.numpy()))[::-1][:3]
    np.testing.assert_allclose(vals, exp, rtol=1e-6)
    assert vecs.shape == (12, 3) and n > 0


def test_hessian_spectrum_smoke_has_ordered_spectra():
    s = experiments.run("hessian-spectrum", "smoke").summary()
    for net in ("plain", "bn"):
        ev = s[net]["trained"]["eigenvalues"]
        assert ev == sorted(ev, reverse=True) and ev[0] > 0
        assert 0 <= s[net]["trained"]["grad_share_top_k"] <= 1
    assert "trained" in s["bn_eval"] and "init" not in s["bn_eval"]


def test_grad_explosion_bn_grows_with_depth_plain_does_not():
    s = experiments.run("grad-explosion", "smoke").summary()
    assert s["bn"]["growth_per_layer"] > 1.1
    assert s["bn"]["growth_per_layer"] > s["plain"]["growth_per_layer"]
    assert s["bn_over_plain_deepest"] > 1


def test_nf_blocks_start_as_identity_or_scaled():
    from bnlib.experiments.nf_training import resnet_mlp

    x = torch.randn(32, 20, generator=torch.Generator().manual_seed(1))
    skip = resnet_mlp("skipinit", 20, 16, 4, seed=0)
    # SkipInit: every branch is multiplied by alpha = 0 at initialisation
    h = skip[0](x)
    assert torch.allclose(skip[1:-1](h), h)
    # scaled WS: every unit's standardised weight has zero mean and variance gain^2 / fan_in
    nf = resnet_mlp("nf", 20, 16, 4, seed=0)
    lin = nf[1].lin
    w = lin.weight
    w_hat = (w - w.mean(1, keepdim=True)) / torch.sqrt(w.var(1, unbiased=False, keepdim=True) * 16 + 1e-4)
    assert torch.allclose(w_hat.mean(1), torch.zeros(16), atol=1e-6)
    assert math.isclose(float((w_hat ** 2).sum(1).mean()), 1.0, rel_tol=1e-2)


def test_adaptive_clip_bounds_each_unit():
    from bnlib.experiments.nf_training import adaptive_clip_, resnet_mlp

    model = resnet_mlp("nf_agc", 10, 8, 2, seed=0)
    for p in model.parameters():
        p.grad = torch.full_like(p, 100.0)
    adaptive_clip_(model, 0.1)
    lin = model[0]
    ratio = lin.weight.grad.norm(dim=1) / lin.weight.norm(dim=1).clamp_min(1e-3)
    assert torch.all(ratio <= 0.1 + 1e-6)
    assert torch.all(model[-1].weight.grad == 100.0)       # the read-out layer is not clipped


def test_weight_decay_shrinks_norm_and_raises_effective_lr():
    s = experiments.run("weight-decay", "smoke").summary()
    assert s["wd"]["final_norm"] < s["no_wd"]["final_norm"]
    assert s["eff_lr_ratio"] > 1 and s["wd"]["final_eff_lr"] > s["no_wd"]["final_eff_lr"]
    assert s["predicted_angle"] == pytest.approx(math.sqrt(2 * 0.1 * 5e-3), rel=1e-3)


def test_sweep_points_pair_seeds():
    from bnlib.experiments.ics_lr_sweep import sweep_points

    h = {"narrow": {"0.05": {"plain": {"l2": 1.0, "cos": 0.5, "beta": 10.0},
                             "bn": {"l2": 0.5, "cos": 0.6, "beta": 5.0}}},
         "linear4": {"0.01": {"plain": {"l2": 2.0, "cos": 0.9}, "bn": {"l2": 3.0, "cos": 0.9}}},
         "data": "x"}
    pts = sweep_points([h, h])
    (lr, mean, low, high, resolved), = pts["ReLU: ‖G − G′‖ (relative)"]["narrow"]
    assert lr == 0.05 and mean == pytest.approx(-0.5) and low == high == mean and resolved
    assert pts["deep linear: ‖G − G′‖ (relative)"]["linear4"][0][1] == pytest.approx(0.5)
    assert pts["ReLU: effective β (relative)"]["narrow"][0][1] == pytest.approx(-0.5)


def test_sweep_points_resolve_like_the_table():
    """A filled marker means the paired difference of the table is resolved, even where the
    per-seed ratios (here -0.5 and -0.51) agree closely."""
    from bnlib import results
    from bnlib.experiments.ics_lr_sweep import sweep_points

    seeds = [{"narrow": {"0.05": {"plain": {"l2": p}, "bn": {"l2": b}}}, "data": "x"}
             for p, b in ((1.0, 0.5), (100.0, 49.0))]
    (_, mean, low, high, resolved), = sweep_points(seeds)["ReLU: ‖G − G′‖ (relative)"]["narrow"]
    table = {"name": "t", "scale": "paper",
             "summary": {k: {"values": [s["narrow"]["0.05"][k]["l2"] for s in seeds]} for k in ("bn", "plain")}}
    d = results.paired_difference(table, "bn", "plain")
    assert resolved == d.resolved is False
    assert low < 0 < high and mean == pytest.approx(d.mean / 50.5)
