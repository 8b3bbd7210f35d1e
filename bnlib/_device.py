"""Choosing where PyTorch code runs: ``device="auto"`` means CUDA when present."""
from __future__ import annotations


def resolve_device(device: str = "auto") -> str:
    """Return ``"cpu"`` or ``"cuda"`` for ``device`` in {"auto", "cpu", "cuda"}.

    Raises ``ValueError`` with a one-line reason when CUDA is asked for and no
    GPU is present, or when ``device`` is not one of the three names.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        raise ValueError("device='cuda' was asked for but no CUDA GPU is available")
    return "cpu"
