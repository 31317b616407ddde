"""Fréchet distance between Gaussians fitted to feature sets (FVD/FID core), in float64.

Statistics (mean, covariance, N and a metadata dict) save to and load from `.npz`, so a real set's
features are computed once.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vidiff.errors import VidiffError


class BiasedEstimateWarning(UserWarning):
    """Fewer samples than feature dimensions: the covariance is rank-deficient and FD is biased."""


@dataclass
class GaussianStats:
    """Mean [D], unbiased covariance [D, D] and sample count of a feature set."""

    mean: np.ndarray
    cov: np.ndarray
    n: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def from_features(
        cls, features, meta: dict[str, Any] | None = None, name: str = "features"
    ) -> GaussianStats:
        x = _as_features(features, name)
        return cls(mean=x.mean(axis=0), cov=np.cov(x, rowvar=False), n=x.shape[0], meta=dict(meta or {}))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.suffix != ".npz":
            raise VidiffError(f"statistics file {path} must end in .npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, mean=self.mean, cov=self.cov, n=np.int64(self.n), meta=np.array(json.dumps(self.meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> GaussianStats:
        path = Path(path)
        if not path.is_file():
            raise VidiffError(
                f"statistics file {path} does not exist; compute it with `vidiff eval --save-real-stats`"
            )
        try:
            with np.load(path, allow_pickle=False) as z:
                mean, cov, n = z["mean"].astype(np.float64), z["cov"].astype(np.float64), int(z["n"])
                meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
        except Exception as exc:  # zip, key or JSON damage all mean the same thing to the user
            raise VidiffError(
                f"statistics file {path} is not a valid vidiff stats .npz ({type(exc).__name__}: {exc}); "
                "recompute it with `vidiff eval --save-real-stats`"
            ) from None
        if mean.ndim != 1 or cov.shape != (mean.shape[0], mean.shape[0]) or n < 2:
            raise VidiffError(
                f"statistics file {path} is inconsistent: mean {mean.shape}, cov {cov.shape}, N={n}; recompute it"
            )
        return cls(mean=mean, cov=cov, n=n, meta=meta)


def _as_features(features, name: str) -> np.ndarray:
    x = features.detach().cpu().numpy() if hasattr(features, "detach") else np.asarray(features)
    x = x.astype(np.float64, copy=False)
    if x.ndim != 2:
        raise VidiffError(f"{name}: expected a [N, D] feature array, got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise VidiffError(
            f"{name}: a covariance needs at least 2 samples, got N={x.shape[0]}; evaluate more videos"
        )
    if not np.isfinite(x).all():
        raise VidiffError(
            f"{name}: features contain NaN or inf; check the input videos and the feature network"
        )
    return x


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """tr(sqrt(cov1 @ cov2)) for symmetric PSD matrices, via a factorisation and a symmetric eigensolve.

    Write cov1 = A A^T. Then cov1 @ cov2 = A (A^T cov2), and XY and YX share their eigenvalues, so the
    eigenvalues of cov1 @ cov2 are those of the symmetric PSD matrix A^T cov2 A; the trace of the
    principal square root is the sum of their square roots. A is the Cholesky factor when cov1 is
    positive definite (Cholesky is backward stable whenever it completes) and V diag(sqrt w) from
    cov1's eigendecomposition when it is singular (N below the dimension). Symmetric solvers (LAPACK
    syevd) return real eigenvalues; the general alternatives, sqrtm's complex Schur form or eigvals of
    the non-symmetric product, are several times slower and leave spurious imaginary parts to
    discard. Tiny negative eigenvalues are round-off on a PSD matrix and are clipped to zero.
    """
    cov1 = 0.5 * (cov1 + cov1.T)
    cov2 = 0.5 * (cov2 + cov2.T)
    try:
        a = np.linalg.cholesky(cov1)
    except np.linalg.LinAlgError:
        w, v = np.linalg.eigh(cov1)
        a = v * np.sqrt(np.clip(w, 0.0, None))
    m = a.T @ cov2 @ a
    ev = np.linalg.eigvalsh(0.5 * (m + m.T))
    return float(np.sqrt(np.clip(ev, 0.0, None)).sum())


def frechet_distance(a, b, names: tuple[str, str] = ("set 1", "set 2")) -> float:
    """||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr(sqrt(S1 S2)); `a`, `b` are GaussianStats or [N, D] features.

    Warns (BiasedEstimateWarning) when either N is below the feature dimension.
    """
    sa = a if isinstance(a, GaussianStats) else GaussianStats.from_features(a, name=names[0])
    sb = b if isinstance(b, GaussianStats) else GaussianStats.from_features(b, name=names[1])
    if sa.dim != sb.dim:
        raise VidiffError(
            f"feature dimensions differ: {names[0]} has {sa.dim}, {names[1]} has {sb.dim}; "
            "both sets must come from the same feature network"
        )
    for name, s in zip(names, (sa, sb), strict=True):
        if s.n < s.dim:
            warnings.warn(
                f"{name}: N={s.n} samples is below the feature dimension {s.dim}; the covariance is "
                "rank-deficient and the Fréchet distance is biased (compare only numbers with equal N)",
                BiasedEstimateWarning,
                stacklevel=2,
            )
    diff = sa.mean - sb.mean
    fd = diff @ diff + np.trace(sa.cov) + np.trace(sb.cov) - 2.0 * trace_sqrt_product(sa.cov, sb.cov)
    # Round-off can push an exact zero (identical sets) slightly negative.
    return float(max(fd, 0.0))
