"""The command line: one-line errors for bad arguments, real output for good ones."""
import subprocess
import sys

import pytest


def bnlib_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bnlib", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("args, expected", [
    (["run", "no-such-experiment", "--scale", "smoke"], "unknown experiment 'no-such-experiment'"),
    (["run", "fan-in", "--scale", "huge"], "invalid choice: 'huge'"),
    (["run", "fan-in", "--device", "tpu"], "invalid choice: 'tpu'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_give_one_line_error(args, expected):
    proc = bnlib_cli(*args)
    assert proc.returncode != 0
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_cuda_without_gpu_is_a_clear_error():
    import torch

    proc = bnlib_cli("run", "fan-in", "--scale", "smoke", "--device", "cuda")
    if torch.cuda.is_available():
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode != 0
        assert "no CUDA GPU is available" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_list_names_every_experiment():
    from bnlib import experiments

    proc = bnlib_cli("list")
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.strip().splitlines()]
    assert listed == list(experiments.available())
    assert "fan-in" in listed


def test_gpu_bench_without_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        return  # the GPU table itself is exercised by chapter 8 on a GPU machine
    proc = bnlib_cli("bench", "--device", "cuda")
    assert proc.returncode != 0
    assert "no CUDA GPU is available" in proc.stderr and "Traceback" not in proc.stderr
