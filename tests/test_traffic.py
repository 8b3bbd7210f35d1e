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
