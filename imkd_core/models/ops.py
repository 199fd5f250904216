"""Small shared tensor ops chosen to be correct in ONNX as well as in eager torch."""

from __future__ import annotations

import torch


def scatter_sum(src: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """out[i] = sum of src[k] with index[k] == i, out has n rows (src (P,) or (P, C)).

    Uses scatter_add (ONNX ScatterElements, reduction='add'): index_add exports as a plain
    ScatterND that silently drops duplicate indices.
    """
    if src.dim() == 1:
        return src.new_zeros(n).scatter_add(0, index, src)
    C = src.shape[1]
    return src.new_zeros(n, C).scatter_add(0, index[:, None].expand(-1, C), src)
