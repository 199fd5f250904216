"""Lift-splat view transform with BEVPoolv2-style cached indices.

The BEV voxel of every frustum cell (camera, depth bin, feature row/col) depends only on the
calibration (intrinsics incl. image augmentation, cam_to_ego incl. BEV augmentation) and the
camera mask, so the (depth index, context index, BEV index) triplets are computed once per
calibration and kept in a small LRU cache keyed by the exact bytes of those tensors. Pooling is
then a gather + multiply + sorted segment-sum (`scatter_add`), pure torch on CPU/GPU and
ONNX-exportable (the indices are plain tensors). On CPU in eager mode the same sum runs as a
sparse CSR x dense product (row pointers precomputed with the indices; identical result,
several times faster there). `pool_indices` recomputes the indices every call; the benchmark
times both.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass

import torch

from imkd_core.config import GridConfig
from imkd_core.models.ops import scatter_sum


@dataclass
class PoolIndices:
    """Flat indices of the frustum cells that land inside the BEV grid, sorted by (bev, ctx).

    depth: into depth.reshape(-1) of shape (B, N, D, h, w); ctx: into the (B, N, h, w) pixels;
    bev: into the (B, ny, nx) cells. `n_bev` = B * ny * nx.
    For the sparse-matmul pooling, the unique (cell, pixel) pairs form a canonical CSR matrix:
    `pair` maps each point to its pair, `pair_ctx` are the pairs' columns, `crow` the row
    pointers (n_bev + 1). Optional: without them pooling uses scatter_add.
    """

    depth: torch.Tensor
    ctx: torch.Tensor
    bev: torch.Tensor
    n_bev: int
    pair: torch.Tensor | None = None
    pair_ctx: torch.Tensor | None = None
    crow: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.bev.numel())


def depth_bin_centres(depth_bins: tuple[float, float, float], device: torch.device | None = None,
                      dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Centres d_min + (k + 0.5) * step of the D depth bins."""
    lo, hi, step = depth_bins
    n = round((hi - lo) / step)
    return lo + (torch.arange(n, device=device, dtype=dtype) + 0.5) * step


def frustum_points(intrinsics: torch.Tensor, cam_to_ego: torch.Tensor, image_size: tuple[int, int],
                   feat_size: tuple[int, int], depth_bins: tuple[float, float, float]) -> torch.Tensor:
    """Ego-frame points (B, N, D, h, w, 3) of the frustum cells (float64 for exact binning).

    Feature cell (i, j) looks through input pixel ((j + 0.5) * s - 0.5, (i + 0.5) * s - 0.5)
    (pixel-centre convention, s = image stride) at the depth-bin centres.
    """
    dev = intrinsics.device
    H, W = image_size
    h, w = feat_size
    sy, sx = H / h, W / w
    v = (torch.arange(h, device=dev, dtype=torch.float64) + 0.5) * sy - 0.5
    u = (torch.arange(w, device=dev, dtype=torch.float64) + 0.5) * sx - 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    pix = torch.stack([uu, vv, torch.ones_like(uu)], -1)                    # (h, w, 3)
    K_inv = torch.linalg.inv(intrinsics.double())                           # (B, N, 3, 3)
    R = cam_to_ego[..., :3, :3].double()
    t = cam_to_ego[..., :3, 3].double()
    rays = torch.einsum("bnij,bnjk,hwk->bnhwi", R, K_inv, pix)              # (B, N, h, w, 3)
    d = depth_bin_centres(depth_bins, dev)                                  # (D,)
    return d[None, None, :, None, None, None] * rays[:, :, None] + t[:, :, None, None, None, :]


def pool_indices(intrinsics: torch.Tensor, cam_to_ego: torch.Tensor, camera_mask: torch.Tensor,
                 grid: GridConfig, image_size: tuple[int, int], feat_size: tuple[int, int],
                 depth_bins: tuple[float, float, float]) -> PoolIndices:
    """Compute the BEV-pool indices from scratch (no cache)."""
    B, N = intrinsics.shape[:2]
    pts = frustum_points(intrinsics, cam_to_ego, image_size, feat_size, depth_bins)
    D, h, w = pts.shape[2:5]
    ix = torch.floor((pts[..., 0] - grid.x_bound[0]) / grid.cell)
    iy = torch.floor((pts[..., 1] - grid.y_bound[0]) / grid.cell)
    z = pts[..., 2]
    ny, nx = grid.shape
    keep = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny) & (z >= grid.z_bound[0]) & (z < grid.z_bound[1])
    keep = keep & camera_mask.bool()[:, :, None, None, None]
    depth_idx = keep.reshape(-1).nonzero().squeeze(1)
    b = torch.div(depth_idx, N * D * h * w, rounding_mode="floor")
    bev = b * (ny * nx) + iy.reshape(-1)[depth_idx].long() * nx + ix.reshape(-1)[depth_idx].long()
    # context pixel (b, n, i, j) of a frustum cell (b, n, k, i, j)
    bn = torch.div(depth_idx, D * h * w, rounding_mode="floor")
    ctx = bn * (h * w) + depth_idx % (h * w)
    n_pix = B * N * h * w
    key, order = torch.sort(bev * n_pix + ctx, stable=True)
    pair_key, pair = torch.unique_consecutive(key, return_inverse=True)
    pair_bev = torch.div(pair_key, n_pix, rounding_mode="floor")
    crow = torch.zeros(B * ny * nx + 1, dtype=torch.long, device=bev.device)
    crow[1:] = torch.bincount(pair_bev, minlength=B * ny * nx).cumsum(0)
    return PoolIndices(depth=depth_idx[order], ctx=ctx[order], bev=bev[order], n_bev=B * ny * nx,
                       pair=pair, pair_ctx=pair_key % n_pix, crow=crow)


def _use_csr(depth: torch.Tensor, idx: PoolIndices, method: str) -> bool:
    if method not in ("auto", "scatter", "csr"):
        raise ValueError(f"bev_pool method must be auto, scatter or csr, got {method!r}")
    if method == "scatter" or idx.crow is None or idx.pair is None or idx.pair_ctx is None:
        return False
    if method == "csr":
        return True
    exporting = torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()
    return depth.device.type == "cpu" and not exporting


def bev_pool(depth: torch.Tensor, context: torch.Tensor, idx: PoolIndices, bev_shape: tuple[int, int],
             method: str = "auto") -> torch.Tensor:
    """Splat: out[b, :, y, x] = sum over frustum cells in (y, x) of depth prob * context.

    depth (B, N, D, h, w); context (B, N, h, w, C) channels-last -> (B, C, ny, nx).
    method: 'scatter' (gather, multiply, scatter_add: any device, ONNX), 'csr' (sparse CSR
    matrix of depth weights x context), 'auto' = csr on CPU in eager mode, else scatter.
    """
    B = depth.shape[0]
    C = context.shape[-1]
    ny, nx = bev_shape
    weights = depth.reshape(-1).index_select(0, idx.depth)  # index_select: fast row gathers on CPU
    ctx = context.reshape(-1, C)
    if _use_csr(depth, idx, method):
        # autocast off: MKL's sparse x dense product has no bfloat16 kernel (float32 either way)
        with warnings.catch_warnings(), torch.autocast(depth.device.type, enabled=False):
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta" (once per process)
            w = scatter_sum(weights.float(), idx.pair, idx.pair_ctx.numel())  # merge bins sharing a pair
            S = torch.sparse_csr_tensor(idx.crow, idx.pair_ctx, w, size=(idx.n_bev, ctx.shape[0]),
                                        check_invariants=False)
            out = torch.sparse.mm(S, ctx.float()).to(torch.promote_types(weights.dtype, ctx.dtype))
    else:
        out = scatter_sum(weights.unsqueeze(1) * ctx.index_select(0, idx.ctx), idx.bev, idx.n_bev)
    return out.view(B, ny, nx, C).permute(0, 3, 1, 2)


class PoolIndexCache:
    """LRU of PoolIndices keyed by the exact bytes of (intrinsics, cam_to_ego, camera_mask)."""

    def __init__(self, maxsize: int = 4) -> None:
        self.maxsize = maxsize
        self._store: OrderedDict[tuple, PoolIndices] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(intrinsics: torch.Tensor, cam_to_ego: torch.Tensor, camera_mask: torch.Tensor) -> tuple:
        parts = [t.detach().to("cpu").contiguous() for t in (intrinsics, cam_to_ego, camera_mask)]
        return (str(intrinsics.device),) + tuple((tuple(p.shape), str(p.dtype), p.numpy().tobytes()) for p in parts)

    def get(self, key: tuple) -> PoolIndices | None:
        idx = self._store.get(key)
        if idx is None:
            self.misses += 1
            return None
        self.hits += 1
        self._store.move_to_end(key)
        return idx

    def put(self, key: tuple, idx: PoolIndices) -> None:
        self._store[key] = idx
        self._store.move_to_end(key)
        while len(self._store) > self.maxsize:
            self._store.popitem(last=False)

    def clear(self) -> None:
        self._store.clear()

    def __len__(self) -> int:
        return len(self._store)


class LiftSplat(torch.nn.Module):
    """Depth x context -> camera BEV feature F_C, with cached pool indices (no parameters)."""

    def __init__(self, grid: GridConfig, image_size: tuple[int, int], feat_size: tuple[int, int],
                 depth_bins: tuple[float, float, float], cache_size: int = 4) -> None:
        super().__init__()
        self.grid = grid
        self.image_size = tuple(image_size)
        self.feat_size = tuple(feat_size)
        self.depth_bins = tuple(depth_bins)
        self.cache = PoolIndexCache(cache_size)

    def indices(self, intrinsics: torch.Tensor, cam_to_ego: torch.Tensor, camera_mask: torch.Tensor,
                cached: bool = True) -> PoolIndices:
        """Pool indices for this calibration: from the LRU cache, or computed (and cached)."""
        if not cached:
            return self.indices_uncached(intrinsics, cam_to_ego, camera_mask)
        key = self.cache.key(intrinsics, cam_to_ego, camera_mask)
        idx = self.cache.get(key)
        if idx is None:
            idx = self.indices_uncached(intrinsics, cam_to_ego, camera_mask)
            self.cache.put(key, idx)
        return idx

    def indices_uncached(self, intrinsics: torch.Tensor, cam_to_ego: torch.Tensor,
                         camera_mask: torch.Tensor) -> PoolIndices:
        return pool_indices(intrinsics, cam_to_ego, camera_mask, self.grid, self.image_size,
                            self.feat_size, self.depth_bins)

    def forward(self, depth: torch.Tensor, context: torch.Tensor, intrinsics: torch.Tensor,
                cam_to_ego: torch.Tensor, camera_mask: torch.Tensor, cached: bool = True) -> torch.Tensor:
        idx = self.indices(intrinsics, cam_to_ego, camera_mask, cached)
        return bev_pool(depth, context, idx, self.grid.shape)
