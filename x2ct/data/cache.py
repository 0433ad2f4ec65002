"""DRR views of training CTs, computed once and kept on disk.

Projecting a CT costs far more than reading a small array, and a training run
asks for the same views every epoch; so views are stored as ``.npy`` files
(read with ``allow_pickle=False``: never a pickle) under a key that changes
whenever anything that shapes them changes: the normalised CT's bytes, its
shape and protocol state (geometry and HU range), the view angles and size,
and the projector's identity (algorithm, mode, geometry, x2ct version). Files
are written to a temporary name and renamed, so a crash or two DataLoader
workers writing the same views never leave a half-written file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Protocol as TypingProtocol, Sequence

import numpy as np

from x2ct import __version__
from x2ct.data.protocol import ProtocolState, to_hu
from x2ct.errors import InputError
from x2ct.image import Volume, to_canonical


class Projector(TypingProtocol):
    """Makes views of a CT: anything with an ``identity`` string and this call."""

    #: Names everything that shapes the output (algorithm, mode, geometry, version): part of the cache key.
    identity: str

    def __call__(self, volume: Volume, angles: Sequence[float], size: int) -> np.ndarray:
        """HU volume (canonical frame) -> float32 views (V, size, size), one per angle."""


@dataclasses.dataclass(frozen=True)
class PhysicsProjector:
    """DRRs from ``x2ct.physics``, all angles in one batched call.

    ``x2ct`` mode: the X2CT benchmark chain (cone beam on ``geometry``'s
    detector, per-image max normalisation and 8-bit quantisation, resize to
    the view size), values in [0, 1]. ``beer-lambert``: line integrals of
    attenuation rendered directly at the view size on the same detector.
    """

    mode: str = "x2ct"
    geometry: object = None  # x2ct.physics.DRRGeometry; None = the X2CT benchmark geometry

    def __post_init__(self) -> None:
        from x2ct.physics import MODES, X2CT_GEOMETRY

        if self.mode not in MODES:
            raise InputError(f"DRR mode must be one of {', '.join(MODES)}, got {self.mode!r}.")
        if self.geometry is None:
            object.__setattr__(self, "geometry", X2CT_GEOMETRY)

    @property
    def identity(self) -> str:
        return f"x2ct.physics/{self.mode}/{self.geometry!r}/x2ct-{__version__}"

    def __call__(self, volume: Volume, angles: Sequence[float], size: int) -> np.ndarray:
        import torch

        from x2ct.physics import hu_to_mu, project, x2ct_views

        canonical = to_canonical(volume)
        spacing = canonical.spacing[::-1]  # (sD, sH, sW) of numpy axes (k, j, i)
        hu = torch.from_numpy(np.asarray(canonical.array, dtype=np.float32))[None, None]
        with torch.no_grad():
            if self.mode == "x2ct":
                views = x2ct_views(hu, spacing, list(angles), size, self.geometry)
            else:
                detector = dataclasses.replace(self.geometry, pixels=(size, size))
                views = project(hu_to_mu(hu), spacing, list(angles), detector)
        return views[0].numpy()


class ViewCache:
    """``views(ct, state)``: the projector's views of a normalised CT, from disk when already made."""

    def __init__(self, projector: Projector, angles: Sequence[float] = (0.0, 90.0), size: int = 128,
                 folder: str | os.PathLike | None = None) -> None:
        self.projector = projector
        self.angles = tuple(float(a) for a in angles)
        if not self.angles or not all(np.isfinite(self.angles)):
            raise InputError(f"View angles must be one or more finite numbers of degrees, got {angles}.")
        if int(size) != size or size < 2:
            raise InputError(f"The view size must be a whole number of pixels >= 2, got {size}.")
        self.size = int(size)
        self.folder = Path(folder) if folder is not None else default_folder()

    def key(self, ct: np.ndarray, state: ProtocolState) -> str:
        """sha256 of the CT bytes and of everything else the views depend on."""
        ct = np.ascontiguousarray(ct, dtype=np.float32)
        digest = hashlib.sha256()
        digest.update(ct.tobytes())
        settings = {"shape": list(ct.shape), "state": dataclasses.asdict(state), "angles": list(self.angles),
                    "size": self.size, "projector": self.projector.identity, "x2ct": __version__}
        digest.update(json.dumps(settings, sort_keys=True, default=float).encode())
        return digest.hexdigest()

    def path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.npy"

    def views(self, ct: np.ndarray, state: ProtocolState) -> np.ndarray:
        """float32 (V, size, size) views of ``ct`` (normalised, canonical) at ``self.angles``."""
        path = self.path(self.key(ct, state))
        expected = (len(self.angles), self.size, self.size)
        cached = _load(path, expected)
        if cached is not None:
            return cached
        views = np.asarray(self.projector(to_hu(ct, state), self.angles, self.size), dtype=np.float32)
        if views.shape != expected:
            raise InputError(f"The projector {self.projector.identity} returned views of shape {views.shape}, "
                             f"expected {expected}.")
        _save(path, views)
        return views


def default_folder() -> Path:
    """``<x2ct cache>/views`` (see ``x2ct.sampledata.cache_dir``)."""
    from x2ct.sampledata import cache_dir

    return cache_dir() / "views"


def _load(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array, or None when missing or unusable (it is then recomputed and replaced)."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if array.shape != shape or array.dtype != np.float32 or not np.isfinite(array).all():
        return None
    return array


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{path.stem[:16]}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            np.save(file, array, allow_pickle=False)
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
