"""The experiment contract, the device choice and the exercise tooling."""
import dataclasses
import sys
import subprocess

import nbformat
import pytest

from bnlib import experiments
from bnlib._device import resolve_device
from bnlib.exercises import (BEGIN, END, ExerciseError, expect_close, expect_shape,
                             make_student_notebooks, run_check, strip_solutions, student_source)
from bnlib.experiments.base import ExperimentConfig


def test_import_bnlib_does_not_import_torch():
    code = "import bnlib, bnlib.scratch, bnlib.data, bnlib.experiments, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@dataclasses.dataclass
class _Config(ExperimentConfig):
    steps: int = 10
    SCALES = {"smoke": {"steps": 1}, "paper": {"steps": 1000}}


def test_config_scales_and_overrides():
    assert _Config.at_scale("smoke").steps == 1
    assert _Config.at_scale("book").steps == 10
    assert _Config.at_scale("paper", steps=5, seed=3).steps == 5
    with pytest.raises(ValueError, match="scale must be one of"):
        _Config.at_scale("huge")
    with pytest.raises(ValueError, match="no field"):
        _Config.at_scale("book", stepz=3)


@pytest.mark.parametrize("name", list(experiments.available()))
def test_every_experiment_follows_the_contract(name):
    module = experiments.get(name)
    assert issubclass(module.Config, ExperimentConfig)
    for scale in experiments.SCALES:
        config = module.Config.at_scale(scale)
        assert config.scale == scale
    assert module.__doc__ and module.__doc__.strip(), f"{name} needs a docstring"


def test_unknown_experiment():
    with pytest.raises(KeyError, match="unknown experiment"):
        experiments.get("nope")


def test_resolve_device():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu")


SOLVED = f"""def f(x):
    \"\"\"Double x.\"\"\"
    {BEGIN}
    y = 2 * x
    return y
    {END}
"""


def test_strip_solutions_keeps_signature_and_indentation():
    out = strip_solutions(SOLVED)
    assert "2 * x" not in out
    assert 'def f(x):\n    """Double x."""\n    raise NotImplementedError' in out
    namespace = {}
    exec(out, namespace)
    with pytest.raises(NotImplementedError):
        namespace["f"](1)


def test_student_source_drops_feedback_assertions():
    src = "feedback = check(f)\nassert feedback.passed, 'x'\nassert 1 == 1\n"
    assert student_source(src) == "feedback = check(f)\nassert 1 == 1\n"


def test_run_check_reports_pass_fail_todo():
    assert run_check("ok", lambda: "fine").passed
    def wrong():
        raise ExerciseError("dx is off")
    fb = run_check("bad", wrong)
    assert not fb.passed and str(fb) == "[FAIL] bad: dx is off"
    def todo():
        raise NotImplementedError
    assert str(run_check("todo", todo)).startswith("[TODO] todo: not implemented")


def test_expect_helpers_name_the_problem():
    with pytest.raises(ExerciseError, match=r"dgamma has shape \(1, 3\), expected \(3,\)"):
        expect_shape("dgamma", [[1, 2, 3]], (3,))
    with pytest.raises(ExerciseError, match="dx is None"):
        expect_shape("dx", None, (3,))
    with pytest.raises(ExerciseError, match="dx is off: max relative error"):
        expect_close("dx", [1.0, 2.0], [1.0, 2.1])
    assert expect_close("dx", [1.0, 2.0], [1.0, 2.0]) == 0.0


def _tiny_notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(SOLVED, metadata={"tags": ["solution", "hide-input"]}),
        nbformat.v4.new_code_cell(
            "from bnlib.exercises import run_check, expect_close\n"
            "def check_double(f):\n"
            "    return run_check('double', lambda: (expect_close('f(3)', f(3), 6), 'ok')[1])\n"
            "fb = check_double(f)\nprint(fb)\nassert fb.passed"),
    ]
    nbformat.write(nb, path)


def test_student_version_and_grading(tmp_path):
    from bnlib.exercises import grade

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    _tiny_notebook(src / "01_tiny.ipynb")
    _tiny_notebook(tmp_path / "01_tiny.ipynb")         # a submission with the right answer
    result = grade(tmp_path / "01_tiny.ipynb", src, timeout=60)
    assert (result.score, result.total) == (1, 1) and result.checks[0].message == "ok"
    (written,) = make_student_notebooks(src, dst)
    student = nbformat.read(written, as_version=4)
    assert "2 * x" not in student.cells[0].source
    assert "assert fb.passed" not in student.cells[1].source
    assert all(not c.get("outputs") for c in student.cells)
    result = grade(written, src, timeout=60)
    assert (result.score, result.total) == (0, 1)
    assert result.checks[0].message.startswith("not implemented")
