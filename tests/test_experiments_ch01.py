"""Chapter 1's experiments show their effects at smoke scale (a second or two each)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnlib import experiments
from bnlib.experiments import conditioning, hidden_drift, saturation
from bnlib.preprocessing import standardize, wine
from bnlib.scratch import numerical_gradient, rel_error

ROOT = Path(__file__).resolve().parents[1]


def test_registered():
    names = experiments.available()
    for name in ("saturation", "conditioning", "hidden-drift"):
        assert name in names and names[name]


# --- standardisation ----------------------------------------------------------------

def test_standardize_gives_zero_mean_unit_std_and_reuses_training_statistics():
    x, _, _ = wine()
    out = standardize(x[:120], x[120:])
    assert np.allclose(out.x_train.mean(axis=0), 0, atol=1e-12)
    assert np.allclose(out.x_train.std(axis=0), 1)
    assert np.allclose(out.x_test, (x[120:] - x[:120].mean(0)) / x[:120].std(0))
    const = standardize(np.c_[x[:, :1], np.full(len(x), 3.0)])
    assert np.all(np.isfinite(const.x_train)) and np.all(const.x_train[:, 1] == 0)
    with pytest.raises(ValueError, match="x_test"):
        standardize(x, x[:, :3])


def test_wine_features_have_very_different_scales():
    x, labels, names = wine()
    assert x.shape == (178, 13) and len(names) == 13 and set(labels) == {0, 1, 2}
    assert x.std(axis=0).max() / x.std(axis=0).min() > 1000


# --- saturation -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def sat():
    return experiments.run("saturation", "smoke")


@pytest.mark.parametrize("act", saturation.ACTIVATIONS)
def test_threshold_is_where_the_slope_equals_the_limit(act):
    for slope in (0.001, 0.01, 0.1):
        z = saturation.saturation_threshold(act, slope)
        assert saturation.derivative(np.array(z), act) == pytest.approx(slope, rel=1e-9)
    assert saturation.saturation_threshold(act, 2.0) == 0.0


def test_derivatives_match_finite_differences():
    z = np.linspace(-6, 6, 25)
    for act in saturation.ACTIVATIONS:
        num = (saturation.activation(z + 1e-6, act) - saturation.activation(z - 1e-6, act)) / 2e-6
        assert np.allclose(saturation.derivative(z, act), num, atol=1e-8)


def test_saturated_fraction_matches_erfc_prediction_and_rises_with_scale(sat):
    h = sat.histories
    for act in saturation.ACTIVATIONS:
        frac = h[act]["frac"]
        assert np.max(np.abs(frac - h[act]["predicted"])) < 0.02
        assert np.all(np.diff(frac) >= -0.01)                 # rises with the input scale
        assert frac[0] < 0.01 and frac[-1] > 0.95
        assert np.all(np.diff(h[act]["mean_slope"]) < 0)       # the mean slope only falls
    s = sat.summary()
    assert s["tanh"]["z_sat"] == pytest.approx(math.atanh(math.sqrt(0.99)))
    assert s["tanh"]["frac_at_scale_1"] < 0.01 < 0.3 < s["tanh"]["frac_at_scale_3"]
    assert s["sigmoid"]["frac_at_scale_10"] == pytest.approx(
        s["sigmoid"]["predicted_at_scale_10"], abs=0.03)
    # at the same input scale the sigmoid saturates less than tanh (threshold 4.58 vs 2.99)
    assert s["sigmoid"]["frac_at_scale_3"] < s["tanh"]["frac_at_scale_3"]


def test_raw_wine_features_saturate_the_first_layer(sat):
    w = sat.summary()["wine"]
    assert w["raw"]["tanh_saturated"] > 0.95 and w["raw"]["sigmoid_saturated"] > 0.95
    assert w["standardized"]["tanh_saturated"] < 0.03
    assert abs(w["standardized"]["z_std"] - 1) < 0.3 and w["raw"]["z_std"] > 50


# --- conditioning ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def cond():
    return experiments.run("conditioning", "smoke")


def test_least_squares_gradient_is_right():
    rng = np.random.default_rng(0)
    X, y, w = rng.normal(size=(30, 3)), rng.normal(size=30), rng.normal(size=3)

    def loss():
        return 0.5 * np.mean((X @ w - y) ** 2)

    analytic = conditioning.hessian(X) @ w - X.T @ y / len(X)
    assert rel_error(analytic, numerical_gradient(loss, w)) < 1e-7


def test_standardised_problem_converges_in_far_fewer_iterations(cond):
    tf = cond.summary()["two_features"]
    raw, std = tf["raw"], tf["standardized"]
    assert raw["kappa"] == pytest.approx(cond.config.feature_scale ** 2, rel=0.2)
    assert std["kappa"] < 1.5
    assert std["iterations"] <= 5
    assert raw["iterations"] > 50 * std["iterations"]
    # two features: the contraction bound of eq. (ch1-iterations) is exact
    assert abs(raw["iterations"] - raw["predicted_iterations"]) <= 1
    # the step that suits the standardised problem makes the raw one diverge
    assert tf["raw_with_standardized_lr_diverged"]
    # both runs end at the least-squares solution
    for kind in conditioning.KINDS:
        h = cond.histories["two_features"][kind]
        assert np.allclose(h["w"], h["w_star"], rtol=1e-2, atol=1e-3)


def test_iterations_grow_like_kappa(cond):
    sw = cond.summary()["sweep"]
    raw = np.array(sw["raw_iterations"], dtype=float)
    assert np.all(np.diff(raw) > 0)
    assert max(sw["standardized_iterations"]) <= 5
    # kappa = scale^2: ten times the scale costs about a hundred times the steps
    i1, i10 = sw["scales"].index(1.0), sw["scales"].index(10.0)
    assert raw[i10] / max(raw[i1], 1) > 50
    i3 = sw["scales"].index(3.0)
    kappa = np.array(sw["raw_kappa"])
    assert 0.7 < (raw[i10] / raw[i3]) / (kappa[i10] / kappa[i3]) < 1.3


def test_wine_raw_does_not_converge_and_standardised_does(cond):
    w = cond.summary()["wine"]
    assert w["raw"]["kappa"] > 1e7 and w["standardized"]["kappa"] < 100
    assert w["raw"]["iterations"] is None and w["raw"]["final_rel_excess"] > 0.5
    assert w["standardized"]["iterations"] is not None
    assert w["standardized"]["iterations"] <= w["standardized"]["predicted_iterations"]


def test_predicted_iterations_formula():
    assert conditioning.predicted_iterations(1.0, 1e-6) == 1
    rho = 9 / 11
    k = conditioning.predicted_iterations(10.0, 1e-6)
    assert rho ** (2 * k) <= 1e-6 < rho ** (2 * (k - 1))
    with pytest.raises(ValueError):
        conditioning.predicted_iterations(0.5, 1e-6)


# --- hidden-drift ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def drift():
    return experiments.run("hidden-drift", "smoke")


def test_hidden_layers_drift_and_saturate_while_training(drift):
    s = drift.summary()["standardized"]
    assert s["loss_final"] < 0.2 * s["loss_init"]                 # the network learns
    assert s["std_init"][0] == pytest.approx(1.0, abs=0.2)        # layer 1: standardised x
    assert s["last_layer_std_growth"] > 2.5                       # the last layer widens ...
    assert s["saturated_init"][-1] < 0.01 < 0.04 < s["saturated_final"][-1]   # ... and saturates
    pct = drift.histories["standardized"]["percentiles"]
    spread = pct[:, -1, 2] - pct[:, -1, 0]
    assert spread[-1] > 2 * spread[0]


def test_raw_input_saturates_the_first_layer_from_the_start(drift):
    s = drift.summary()
    assert s["raw"]["saturated_init"][0] > 0.3 > 0.05 > s["standardized"]["saturated_init"][0]
    assert s["raw"]["loss_final"] > s["standardized"]["loss_final"]


def test_same_weights_for_both_inputs():
    cfg = hidden_drift.Config.at_scale("smoke")
    a, b = hidden_drift.build_network(cfg), hidden_drift.build_network(cfg)
    assert all(np.array_equal(p, q) for p, q in zip(a.params(), b.params()))


def test_bad_configs_are_rejected():
    with pytest.raises(ValueError, match="inputs"):
        hidden_drift.run(hidden_drift.Config.at_scale("smoke", inputs=("centred",)))
    with pytest.raises(ValueError, match="tol"):
        conditioning.run(conditioning.Config.at_scale("smoke", tol=2.0))
    with pytest.raises(ValueError, match="scale"):
        saturation.run(saturation.Config.at_scale("smoke", scale_min=-1.0))


def test_cli_run_writes_json_and_png(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "bnlib", "run", "conditioning", "--scale", "smoke",
         "--device", "cpu", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "conditioning.json").read_text())["summary"]
    assert summary["two_features"]["standardized"]["iterations"] <= 5
    png = (tmp_path / "conditioning.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
