"""The chapter 2 exercise checks accept right answers and explain wrong ones."""
import numpy as np
import pytest

from bnlib.exercises import ch02
from bnlib.scratch import init


def _todo(*args):
    raise NotImplementedError("your code here")


# --- 2.1 z_std -----------------------------------------------------------------

def z_std_right(x, w_std, b_std):
    return np.sqrt(w_std ** 2 * np.sum(np.asarray(x) ** 2) + b_std ** 2)


def test_z_std_accepts_right_answer(capsys):
    fb = ch02.check_z_std(z_std_right)
    assert fb.passed, fb.message
    assert "[PASS]" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, w, b: w ** 2 * np.sum(np.asarray(x) ** 2) + b ** 2, "variance"),
    (lambda x, w, b: np.sqrt(w ** 2 * np.sum(np.abs(x)) + b ** 2), "squared"),
    (lambda x, w, b: np.sqrt(w ** 2 * np.sum(np.asarray(x) ** 2)), "expected"),
    (lambda x, w, b: None, "return statement"),
    (lambda x, w, b: np.ones(3), "one number"),
])
def test_z_std_rejects_wrong_answers(wrong, hint):
    fb = ch02.check_z_std(wrong)
    assert not fb.passed
    assert hint in fb.message
    assert str(fb).startswith("[FAIL]")


def test_z_std_not_implemented_is_todo():
    fb = ch02.check_z_std(_todo)
    assert not fb.passed and str(fb).startswith("[TODO]")


def test_seed003_numbers():
    x = np.r_[np.ones(500), np.zeros(500)]
    assert ch02.z_std_reference(x, 1.0, 1.0) == pytest.approx(np.sqrt(501))
    assert ch02.z_std_reference(x, 1 / np.sqrt(1000), 1.0) == pytest.approx(np.sqrt(1.5))


# --- 2.2 init_stds -------------------------------------------------------------

def test_init_stds_accepts_right_answer():
    fb = ch02.check_init_stds(lambda i, o: (np.sqrt(2 / (i + o)), np.sqrt(2 / i)))
    assert fb.passed, fb.message


@pytest.mark.parametrize("wrong, hint", [
    (lambda i, o: (2 / (i + o), np.sqrt(2 / i)), "variance"),
    (lambda i, o: (np.sqrt(1 / i), np.sqrt(2 / i)), "averages fan_in and fan_out"),
    (lambda i, o: (np.sqrt(2 / (i + o)), np.sqrt(2 / o)), "fan_in"),
    (lambda i, o: (np.sqrt(2 / (i + o)), np.sqrt(1 / i)), "factor 2"),
    (lambda i, o: np.sqrt(2 / i), "pair"),
])
def test_init_stds_rejects_wrong_answers(wrong, hint):
    fb = ch02.check_init_stds(wrong)
    assert not fb.passed
    assert hint in fb.message


def test_reference_stds_match_bnlib_initialisers():
    rng = np.random.default_rng(0)
    xs, ks = ch02.init_stds_reference(600, 300)
    assert init.xavier_normal(600, 300, rng).std() == pytest.approx(xs, rel=0.01)
    assert init.kaiming_normal(600, 300, rng).std() == pytest.approx(ks, rel=0.01)


# --- 2.3 kaiming_normal --------------------------------------------------------

def test_kaiming_normal_accepts_bnlib_and_a_hand_written_one():
    assert ch02.check_kaiming_normal(init.kaiming_normal).passed
    fb = ch02.check_kaiming_normal(
        lambda n_in, n_out, rng: rng.normal(0.0, np.sqrt(2.0 / n_in), size=(n_in, n_out)))
    assert fb.passed, fb.message


@pytest.mark.parametrize("wrong, hint", [
    (lambda i, o, rng: rng.normal(0, np.sqrt(2 / o), size=(i, o)), "n_out"),
    (lambda i, o, rng: rng.normal(0, 2 / i, size=(i, o)), "square root"),
    (lambda i, o, rng: rng.normal(0, np.sqrt(2 / i), size=(o, i)), "shape"),
    (lambda i, o, rng: np.random.normal(0, np.sqrt(2 / i), size=(i, o)), "rng"),
    (lambda i, o, rng: rng.uniform(-1, 1, size=(i, o)) * np.sqrt(6 / i), "normal"),
    (lambda i, o, rng: 0.1 + rng.normal(0, np.sqrt(2 / i), size=(i, o)), "mean"),
])
def test_kaiming_normal_rejects_wrong_answers(wrong, hint):
    fb = ch02.check_kaiming_normal(wrong)
    assert not fb.passed
    assert hint in fb.message


def test_kaiming_normal_not_implemented_is_todo():
    assert str(ch02.check_kaiming_normal(_todo)).startswith("[TODO]")


# --- 2.4 std_over_depth (new) -----------------------------------------------------

def _std_over_depth_right(x, scale, depth, width, rng):
    h, out = np.asarray(x, float), []
    for _ in range(depth):
        z = h @ (scale * rng.standard_normal((h.shape[1], width)))
        out.append(z.std())
        h = np.maximum(z, 0)
    return np.array(out)


def test_std_over_depth_accepts_right_answer():
    fb = ch02.check_std_over_depth(_std_over_depth_right)
    assert fb.passed, fb.message


@pytest.mark.parametrize("wrong, hint", [
    (lambda x, s, d, w, r: _std_over_depth_right(x, s * s, d, w, r), "variance"),
    (lambda x, s, d, w, r: np.ones(d), "expected"),
    (lambda x, s, d, w, r: None, "return statement"),
    (lambda x, s, d, w, r: _std_over_depth_right(x, s, d, w, np.random.default_rng(0)), "expected"),
])
def test_std_over_depth_rejects_wrong_answers(wrong, hint):
    fb = ch02.check_std_over_depth(wrong)
    assert not fb.passed and hint in fb.message, fb.message


def test_std_over_depth_names_the_relu_and_z_mistakes():
    def of_a(x, s, d, w, r):
        h, out = np.asarray(x, float), []
        for _ in range(d):
            h = np.maximum(h @ (s * r.standard_normal((h.shape[1], w))), 0)
            out.append(h.std())
        return np.array(out)

    def linear(x, s, d, w, r):
        h, out = np.asarray(x, float), []
        for _ in range(d):
            h = h @ (s * r.standard_normal((h.shape[1], w)))
            out.append(h.std())
        return np.array(out)

    assert "activations" in ch02.check_std_over_depth(of_a).message
    assert "ReLU" in ch02.check_std_over_depth(linear).message
    assert str(ch02.check_std_over_depth(_todo)).startswith("[TODO]")
