"""The command line's contract: bad input gives one line on stderr naming the argument, exit 2.

Every subcommand is run in-process with a table of bad arguments; none may
print a traceback or exit with another status.  (test_cli.py runs a few of the
same through a real subprocess.)
"""
from __future__ import annotations

import pytest

from bnlib.__main__ import main


def _bad_cases(tmp):
    a_file = tmp / "a_file"
    a_file.write_text("not a folder")
    not_a_notebook = tmp / "broken.ipynb"
    not_a_notebook.write_text("{ this is not json")
    bad_kernel = tmp / "bad_kernel.ipynb"
    bad_kernel.write_text('{"cells": [], "metadata": {"kernelspec": {"name": "no-such-kernel", '
                          '"display_name": "x", "language": "python"}}, "nbformat": 4, '
                          '"nbformat_minor": 5}')
    no_notebooks = tmp / "class"
    (no_notebooks / "alice").mkdir(parents=True)
    full = tmp / "full"
    full.mkdir()
    (full / "keep.ipynb").write_text("{}")
    ro = tmp / "read_only"
    ro.mkdir()
    ro.chmod(0o500)
    return [
        (["frobnicate"], "invalid choice"),
        (["list", "--nope"], "unrecognized arguments"),
        (["run", "no-such-experiment"], "unknown experiment"),
        (["run", "fan-in", "--seed", "-1"], "--seed"),
        (["run", "fan-in", "--seed", "x"], "--seed"),
        (["run", "fan-in", "--scale", "huge"], "--scale"),
        (["run", "fan-in", "--scale", "smoke", "--out", str(a_file / "sub")], "--out"),
        (["run", "fan-in", "--scale", "smoke", "--out", str(a_file)], "--out"),
        (["reproduce"], "NAME"),
        (["reproduce", "no-such-experiment"], "unknown experiment"),
        (["reproduce", "fan-in", "--seeds", "0"], "--seeds"),
        (["reproduce", "fan-in", "--seeds", "-2"], "--seeds"),
        (["reproduce", "fan-in", "--jobs", "0"], "--jobs"),
        (["reproduce", "fan-in", "--scale", "smoke", "--results", str(a_file)], "--results"),
        (["results", "--bogus"], "unrecognized arguments"),
        (["audit", str(tmp / "missing")], "no such notebook"),
        (["bench", "--repeats", "0"], "--repeats"),
        (["bench", "--repeats", "-3"], "--repeats"),
        (["bench", "--device", "tpu"], "--device"),
        (["student", str(tmp / "missing"), str(tmp / "out")], "SRC"),
        (["student", "chapters", str(a_file)], "DST"),
        (["student", "chapters", "chapters"], "overwrite the solutions"),
        (["student", "chapters", str(full)], "--force"),
        (["grade", "--timeout", "0", "x.ipynb"], "--timeout"),
        (["grade", str(tmp / "missing.ipynb")], "no such notebook"),
        (["grade", str(not_a_notebook)], "not a readable notebook"),
        (["grade"], "SUBMISSION"),
        (["grade", str(bad_kernel)], "no instructor's notebook bad_kernel.ipynb"),
        (["grade", str(bad_kernel), "--source", str(a_file)], "--source"),
        (["grade", str(bad_kernel), "--timeout", "x"], "--timeout"),
        (["grade", str(no_notebooks)], "no student folders"),
        (["student", "chapters", "./chapters/../chapters"], "overwrite the solutions"),
        (["tag", str(tmp / "missing")], "no such notebook"),
    ] + ([] if _is_root() else [
        (["run", "fan-in", "--scale", "smoke", "--out", str(ro / "x")], "not writable")])


def _is_root():
    import os

    return hasattr(os, "geteuid") and os.geteuid() == 0


def test_every_subcommand_answers_bad_input_with_one_line_and_exit_2(tmp_path, capsys,
                                                                      monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    failures = []
    for argv, expected in _bad_cases(tmp_path):
        try:
            code = main(argv)
        except SystemExit as err:
            code = err.code
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        if code != 2 or len(lines) != 1 or "Traceback" in err or expected not in err:
            failures.append(f"{argv}: exit {code}, stderr {err!r}")
    assert not failures, "\n".join(failures)


def test_cuda_asked_for_without_a_gpu_exits_2(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    for argv in (["run", "fan-in", "--device", "cuda"], ["bench", "--device", "cuda"],
                 ["reproduce", "fan-in", "--device", "cuda"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "no CUDA GPU" in err and len(err.strip().splitlines()) == 1


def test_student_never_overwrites_without_force(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    dst = tmp_path / "student"
    assert main(["student", "chapters", str(dst)]) == 0
    assert len(list(dst.glob("*.ipynb"))) == 8
    capsys.readouterr()
    assert main(["student", "chapters", str(dst)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["student", "--force", "chapters", str(dst)]) == 0
