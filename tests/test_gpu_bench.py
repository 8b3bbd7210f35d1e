"""The GPU bench of chapter 8 (``python -m bnlib bench --device cuda --json PATH``) without a GPU.

Its timing loop needs CUDA; everything around it (the rows, the byte model,
the targets, the JSON file, the table, the dependencies) is tested here on
fake timings and, through ``run_gpu_bench(compare=bnlib.timing.compare)``, on
the CPU with tiny shapes and the Triton kernels in the interpreter.
"""
import json
import subprocess
import sys
from functools import partial

import pytest
import torch

from bnlib.kernels import bench
from bnlib.timing import Timing, compare


def _fake(name, ms):
    return Timing(name, [1e-3 * ms * f for f in (0.95, 0.97, 1.0, 1.03, 1.05, 1.0, 1.0)])


def test_rows_from_fake_timings():
    shape = (256, 64, 56, 56)               # 205 MB of float32
    timings = {"torch": _fake("torch", 2.0), "triton": _fake("triton", 2.1),
               "composite": _fake("composite", 9.0)}
    rows = bench.bench_rows(timings, shape=shape, layout="contiguous", dtype="float32",
                            direction="forward+backward", element_size=4, copy_gbps=3000.0)
    r = {row["method"]: row for row in rows}
    nbytes = 256 * 64 * 56 * 56 * 4
    assert r["triton"]["bytes"] == 8 * nbytes and r["triton"]["tensor_bytes"] == nbytes
    assert r["triton"]["gbps"] == pytest.approx(8 * nbytes / 2.1e-3 / 1e9)
    assert r["triton"]["gbps_min"] == pytest.approx(5 * nbytes / 2.1e-3 / 1e9)
    assert r["triton"]["pct_copy"] == pytest.approx(100 * r["triton"]["gbps"] / 3000.0)
    assert r["torch"]["ratio"] == 1.0 and r["triton"]["ratio"] == pytest.approx(1.05)
    assert not r["triton"]["resolved"] and r["composite"]["resolved"]      # overlapping vs apart spreads
    assert r["torch"]["low_ms"] < r["torch"]["ms"] < r["torch"]["high_ms"]
    fwd = bench.bench_rows(timings, shape=shape, layout="contiguous", dtype="float32",
                           direction="forward", element_size=4, copy_gbps=3000.0)
    assert fwd[0]["bytes"] == 3 * nbytes


def test_targets_and_json_round_trip(tmp_path):
    rows = []
    for shape, triton_ms in [((256, 64, 56, 56), 2.1), ((8, 3), 0.05)]:
        for direction in bench.DIRECTIONS:
            rows += bench.bench_rows({"torch": _fake("torch", 2.0), "triton": _fake("triton", triton_ms)},
                                     shape=shape, layout="contiguous", dtype="bfloat16", direction=direction,
                                     element_size=2, copy_gbps=400.0)
    meta = {"gpu": "Fake GPU", "driver": "1.0", "cuda": "12.x", "torch": "2", "triton": "3",
            "copy_gbps": 400.0}
    path = tmp_path / "results" / "gpu" / "fake.json"
    written = bench.write_json(path, meta, rows)
    loaded = bench.load_json(path)
    assert loaded["meta"] == meta and len(loaded["rows"]) == len(rows) == 8
    assert loaded["rows"][0]["shape"] == (256, 64, 56, 56)
    assert json.loads(path.read_text())["targets"] == written["targets"]
    big, small = loaded["targets"]
    assert big["ratio"] == pytest.approx(1.05) and big["ratio_met"]           # within 10%
    assert big["copy_met"] is True                                            # 8 x 103 MB / 2.1 ms = 391 GB/s > 80% of 400
    assert small["copy_met"] is None and small["ratio_met"]                   # too small to judge
    table = bench.format_bench(loaded)
    assert "Fake GPU" in table and "triton" in table and "target (256, 64, 56, 56)" in table


def test_run_gpu_bench_on_the_cpu_with_tiny_shapes():
    meta, rows = bench.run_gpu_bench(shapes=[(16, 3), (4, 3, 4, 4)], dtypes=("float32", "bfloat16"),
                                     methods=("composite", "torch", "triton"), repeats=2, device="cpu",
                                     compare=partial(compare, warmup=1), copy_gbps=10.0, progress=None)
    # (16, 3); (4, 3, 4, 4) contiguous and channels-last: 3 configurations x 2 dtypes x 2 directions x 3 methods
    assert len(rows) == 3 * 2 * 2 * 3
    assert {r["layout"] for r in rows} == {"contiguous", "channels_last"}
    assert all(r["ms"] > 0 and r["gbps"] > 0 for r in rows)
    assert meta["copy_gbps"] == 10.0 and meta["torch"] == torch.__version__ and "triton" in meta
    json.dumps({"meta": meta, "rows": rows})                                   # JSON-ready


def test_without_a_gpu_main_says_so_and_exits_2(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert bench.main("cuda") == 2
    assert len(capsys.readouterr().out.strip().splitlines()) == 1


def test_the_bench_needs_only_torch_triton_and_numpy():
    # a GPU machine's Python may have nothing else: block the book's other dependencies
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'matplotlib', 'scipy', 'sklearn', 'pandas', 'IPython', 'myst_nb',
                                  'nbformat', 'jupyter_client', 'tqdm'}:
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import bnlib.kernels.bench, bnlib.kernels
from bnlib.__main__ import main
sys.exit(main(['bench', '--device', 'cuda', '--json', 'unused.json']))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the bench would run")
    assert proc.returncode == 2, proc.stderr
    assert "no CUDA GPU" in proc.stderr and "blocked" not in proc.stderr + proc.stdout


def test_json_without_cuda_is_a_one_line_error(capsys, tmp_path):
    from bnlib.__main__ import main

    assert main(["bench", "--json", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "--device cuda" in err and len(err.strip().splitlines()) == 1


def test_chapter_8_figures_draw():
    import matplotlib

    matplotlib.use("Agg")
    from bnlib.plots.ch08 import cpu_gap_figure, split_reduction_figure
    from bnlib.timing import Timing

    fig = split_reduction_figure(N=5, L=7, block_n=2, block_l=4, title="t")
    assert len(fig.axes) == 2
    rows = [{"name": n, "threads": 1, "ms": ms, "low_ms": 0.9 * ms, "high_ms": 1.1 * ms,
             "timing": Timing(n, [ms])} for n, ms in (("a", 1.0), ("b", 2.0))]
    fig = cpu_gap_figure(rows, [("a vs b", "a", "b")])
    assert fig.axes[0].get_xlim()[1] > 2.2
