"""Lift-splat: cached BEV pool == naive reference pooling; cache behaviour."""

from __future__ import annotations

import numpy as np
import torch

from imkd_core.config import tiny
from imkd_core.data.synthetic.frames import nuscenes_like_rig
from imkd_core.models.lift_splat import LiftSplat, bev_pool, pool_indices
from imkd_core.preprocess import default_image_aug, image_aug_matrix


def _calibration(B: int, image_size, seed: int = 0):
    """The nuScenes-like rig fitted to the model input, perturbed per sample; camera 3 of
    sample 1 is masked."""
    rng = np.random.default_rng(seed)
    src = (450, 800)
    K0, T0 = nuscenes_like_rig(src)
    M = image_aug_matrix(default_image_aug(src, image_size), src, image_size)
    Ks, Ts = [], []
    for _ in range(B):
        K = M @ K0 * rng.uniform(0.95, 1.05)
        K[:, 2, 2] = 1
        T = T0.copy()
        T[:, :3, 3] += rng.normal(0, 0.2, (6, 3))
        a = rng.normal(0, 0.1)
        R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        T[:, :3, :3] = R @ T[:, :3, :3]
        Ks.append(K)
        Ts.append(T)
    mask = np.ones((B, 6), bool)
    if B > 1:
        mask[1, 3] = False
    return (torch.tensor(np.array(Ks), dtype=torch.float32), torch.tensor(np.array(Ts), dtype=torch.float32),
            torch.tensor(mask))


def _naive_pool(depth, context, K, T, mask, grid, image_size, depth_bins) -> np.ndarray:
    """Independent float64 numpy reference: unproject every frustum cell, bin it, accumulate."""
    B, N, D, h, w = depth.shape
    C = context.shape[-1]
    H, W = image_size
    ny, nx = grid.shape
    out = np.zeros((B, ny, nx, C))
    lo, _, step = depth_bins
    d = lo + (np.arange(D) + 0.5) * step
    u = (np.arange(w) + 0.5) * (W / w) - 0.5
    v = (np.arange(h) + 0.5) * (H / h) - 0.5
    for b in range(B):
        for n in range(N):
            if not mask[b, n]:
                continue
            Kn = K[b, n].double().numpy()
            Tn = T[b, n].double().numpy()
            for k in range(D):
                vv, uu = np.meshgrid(v, u, indexing="ij")
                pc = np.linalg.solve(Kn, np.stack([uu.ravel() * d[k], vv.ravel() * d[k], np.full(h * w, d[k])]))
                pe = Tn[:3, :3] @ pc + Tn[:3, 3:4]
                ix = np.floor((pe[0] - grid.x_bound[0]) / grid.cell).astype(int)
                iy = np.floor((pe[1] - grid.y_bound[0]) / grid.cell).astype(int)
                ok = (ix >= 0) & (ix < nx) & (iy >= 0) & (iy < ny)
                ok &= (pe[2] >= grid.z_bound[0]) & (pe[2] < grid.z_bound[1])
                ctx = context[b, n].double().numpy().reshape(h * w, C)
                feat = depth[b, n, k].double().numpy().ravel()[:, None] * ctx
                np.add.at(out[b], (iy[ok], ix[ok]), feat[ok])
    return out.transpose(0, 3, 1, 2)


def test_cached_pool_equals_naive_reference() -> None:
    cfg = tiny()
    H, W = cfg.data.image_size
    h, w = H // 16, W // 16
    D, C, B = cfg.model.num_depth_bins, 8, 2
    K, T, mask = _calibration(B, (H, W))
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(B, 6, D, h, w, generator=g).softmax(2)
    context = torch.randn(B, 6, h, w, C, generator=g)
    ls = LiftSplat(cfg.grid, (H, W), (h, w), cfg.model.depth_bins, cache_size=2)
    out = ls(depth, context, K, T, mask)                       # miss: computes and caches
    out2 = ls(depth, context, K, T, mask)                      # hit
    assert (ls.cache.misses, ls.cache.hits) == (1, 1)
    ref = _naive_pool(depth, context, K, T, mask, cfg.grid, (H, W), cfg.model.depth_bins)
    assert out.shape == (B, C, 64, 64)
    assert np.abs(ref).sum() > 0
    np.testing.assert_allclose(out.double().numpy(), ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(out, out2)
    torch.testing.assert_close(ls(depth, context, K, T, mask, cached=False), out, atol=1e-6, rtol=1e-6)
    idx = ls.indices(K, T, mask)
    for method in ("scatter", "csr"):  # both pooling kernels against the reference
        np.testing.assert_allclose(bev_pool(depth, context, idx, cfg.grid.shape, method).double().numpy(), ref,
                                   atol=1e-5, rtol=1e-5)
    # the masked camera contributes nothing
    idx = ls.indices(K, T, mask)
    cam = torch.div(idx.ctx, h * w, rounding_mode="floor")
    assert not bool((cam == 6 + 3).any())
    assert bool((idx.bev[1:] >= idx.bev[:-1]).all())  # sorted segment-sum


def test_cache_is_keyed_by_calibration_and_bounded() -> None:
    cfg = tiny()
    H, W = cfg.data.image_size
    ls = LiftSplat(cfg.grid, (H, W), (H // 16, W // 16), cfg.model.depth_bins, cache_size=2)
    K, T, mask = _calibration(1, (H, W))
    a = ls.indices(K, T, mask)
    assert ls.indices(K.clone(), T.clone(), mask.clone()) is a            # same bytes -> hit
    T2 = T.clone()
    T2[0, 0, 0, 3] += 1e-3
    b = ls.indices(K, T2, mask)                                            # any change -> miss
    assert b is not a and ls.cache.misses == 2
    mask2 = mask.clone()
    mask2[0, 2] = False
    ls.indices(K, T, mask2)                                                # third entry evicts the oldest
    assert len(ls.cache) == 2
    assert ls.indices(K, T, mask) is not a and ls.cache.misses == 4


def test_pool_kernels_agree_with_duplicates_and_gradients() -> None:
    """0.25 m depth bins put several bins of one pixel into one cell (duplicate CSR entries);
    scatter and CSR kernels give the same output and the same gradients."""
    cfg = tiny()
    H, W = cfg.data.image_size
    h, w = H // 16, W // 16
    bins = (1.0, 61.0, 0.25)
    K, T, mask = _calibration(2, (H, W), seed=3)
    idx = pool_indices(K, T, mask, cfg.grid, (H, W), (h, w), bins)
    pairs = torch.unique(idx.bev * (2 * 6 * h * w) + idx.ctx)
    assert len(pairs) < len(idx)  # duplicates present
    g = torch.Generator().manual_seed(1)
    d0 = torch.rand(2, 6, 240, h, w, generator=g).softmax(2)
    c0 = torch.randn(2, 6, h, w, 5, generator=g)
    up = torch.randn(2, 5, 64, 64, generator=g)
    res = {}
    for method in ("scatter", "csr"):
        depth, ctx = d0.clone().requires_grad_(), c0.clone().requires_grad_()
        out = bev_pool(depth, ctx, idx, cfg.grid.shape, method)
        (out * up).sum().backward()
        res[method] = (out.detach(), depth.grad, ctx.grad)
    for a, b in zip(res["scatter"], res["csr"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert res["csr"][1].abs().sum() > 0 and res["csr"][2].abs().sum() > 0
