"""MemoryTrace counts the bytes ATen ops read and write (chapter 8)."""
import torch

from bnlib.torch.traffic import MemoryTrace


def test_elementwise_ops_read_and_write_their_tensors():
    x, y = torch.randn(100, 10), torch.randn(100, 10)
    with MemoryTrace() as trace:
        z = x + y
        z.mul_(2.0)
    assert [op.name for op in trace.ops] == ["add", "mul_"]
    assert trace.ops[0].bytes_read == 2 * x.nbytes and trace.ops[0].bytes_written == x.nbytes
    assert trace.total_bytes == 5 * x.nbytes and trace.passes(x) == 5.0


def test_views_move_nothing_and_broadcast_vectors_count_at_their_size():
    x, v = torch.randn(64, 8), torch.randn(8)
    with MemoryTrace() as trace:
        x.view(8, 64).t().reshape(64, 8)
        x * v.view(1, 8)
    assert [op.name for op in trace.ops] == ["mul"]
    assert trace.ops[0].bytes_read == x.nbytes + v.nbytes


def test_backward_inside_the_block_is_traced():
    x = torch.randn(32, 4, requires_grad=True)
    with MemoryTrace() as trace:
        y = torch.nn.functional.batch_norm(x, None, None, training=True)
        torch.autograd.grad(y, x, torch.ones_like(y))
    names = [op.name for op in trace.ops]
    assert any("batch_norm_backward" in n for n in names), names
    table = trace.table(x)
    assert table.splitlines()[0].split() == ["op", "reads", "writes"] and "total" in table.splitlines()[-1]


def test_cpu_gap_probes_compute_batch_norm_and_time_in_turn():
    import pytest

    from bnlib.torch import cpu_gap

    shape = (4, 3, 5, 5)
    probes = cpu_gap.gap_probes(shape)
    assert set(probes) == set(cpu_gap.PROBE_PASSES)
    y_out = probes["bn forward, out= buffers"]()[0]
    y_fresh = probes["bn forward, fresh output"]()[0]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    torch.randn(shape, generator=g)
    w, b = 1 + 0.1 * torch.randn(3, generator=g), 0.1 * torch.randn(3, generator=g)
    ref = torch.nn.functional.batch_norm(x, None, None, w, b, True, 0.0, 1e-5)
    assert torch.allclose(y_out, ref, atol=1e-6) and torch.allclose(y_fresh, ref, atol=1e-6)
    dx_out, dx_fresh = probes["bn backward, out= buffers"]()[0], probes["bn backward, fresh output"]()[0]
    assert torch.allclose(dx_out, dx_fresh)
    threads = torch.get_num_threads()
    rows = cpu_gap.measure_gap(shape, repeats=2, threads=(1, 2), names=["copy, preallocated", "per-channel sum"])
    assert [(r["name"], r["threads"]) for r in rows] == [("copy, preallocated", 1), ("per-channel sum", 1),
                                                          ("copy, preallocated", 2), ("per-channel sum", 2)]
    assert all(r["ms"] > 0 and r["gbps"] == pytest.approx(r["passes"] * x.nbytes / r["ms"] / 1e6) for r in rows)
    assert torch.get_num_threads() == threads
    with pytest.raises(ValueError, match="unknown probes"):
        cpu_gap.measure_gap(shape, names=["memcpy"])
