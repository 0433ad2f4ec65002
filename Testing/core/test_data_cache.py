"""DRR view cache: computed once, keyed on everything that shapes the views, written atomically, no pickle."""

import dataclasses

import numpy as np
import pytest

from x2ct.data.cache import ViewCache
from x2ct.data.protocol import Protocol
from x2ct.errors import InputError
from x2ct.image import CANONICAL_DIRECTION, Volume


class ParallelSum:
    """Parallel-beam sums along the rays of 0 (axis 1) and 90 degrees (axis 2), counting its calls."""

    identity = "test-parallel-sum/1"

    def __init__(self):
        self.calls = 0

    def __call__(self, volume, angles, size):
        self.calls += 1
        mu = np.clip(volume.array + 1000.0, 0, None) / 1000.0
        sums = {0.0: mu.sum(axis=1), 90.0: mu.sum(axis=2)}
        return np.stack([sums[a][:size, :size] for a in angles])


@pytest.fixture
def case():
    protocol = Protocol(size=16, crop_mm=32.0)
    rng = np.random.default_rng(0)
    hu = Volume(rng.uniform(-1000, 500, (16, 16, 16)).astype(np.float32), (2.0,) * 3, (0.0, 0.0, 0.0),
                CANONICAL_DIRECTION.copy())
    return protocol.normalise(hu)


def test_views_computed_once_then_read_from_disk(tmp_path, case):
    ct, state = case
    projector = ParallelSum()
    cache = ViewCache(projector, angles=(0, 90), size=16, folder=tmp_path)
    first = cache.views(ct, state)
    assert first.shape == (2, 16, 16) and first.dtype == np.float32 and projector.calls == 1
    again = ViewCache(projector, angles=(0, 90), size=16, folder=tmp_path).views(ct, state)  # a new process, say
    assert projector.calls == 1
    np.testing.assert_array_equal(first, again)
    # the views are what the projector makes of the CT in HU
    hu = ct * (state.hu_high - state.hu_low) + state.hu_low
    np.testing.assert_allclose(first[1], (np.clip(hu + 1000, 0, None) / 1000).sum(axis=2), rtol=1e-5)
    files = list(tmp_path.rglob("*"))
    assert [f.suffix for f in files if f.is_file()] == [".npy"]
    assert np.load(cache.path(cache.key(ct, state)), allow_pickle=False).shape == (2, 16, 16)


def test_key_changes_with_anything_that_shapes_the_views(tmp_path, case):
    ct, state = case
    projector = ParallelSum()
    base = ViewCache(projector, angles=(0, 90), size=16, folder=tmp_path)
    key = base.key(ct, state)
    assert key == ViewCache(ParallelSum(), angles=(0.0, 90.0), size=16, folder=tmp_path).key(ct.copy(), state)
    touched = ct.copy()
    touched[3, 4, 5] += 1e-3
    other_projector = ParallelSum()
    other_projector.identity = "test-parallel-sum/2"
    variants = [
        base.key(touched, state),
        base.key(ct, dataclasses.replace(state, spacing=(2.5, 2.5, 2.5))),
        base.key(ct, dataclasses.replace(state, hu_high=1000.0)),
        ViewCache(projector, angles=(90, 0), size=16, folder=tmp_path).key(ct, state),
        ViewCache(projector, angles=(0,), size=16, folder=tmp_path).key(ct, state),
        ViewCache(projector, angles=(0, 90), size=8, folder=tmp_path).key(ct, state),
        ViewCache(other_projector, angles=(0, 90), size=16, folder=tmp_path).key(ct, state),
    ]
    assert len({key, *variants}) == len(variants) + 1


def test_unusable_cache_file_is_recomputed(tmp_path, case):
    ct, state = case
    projector = ParallelSum()
    cache = ViewCache(projector, size=16, folder=tmp_path)
    good = cache.views(ct, state)
    path = cache.path(cache.key(ct, state))
    path.write_bytes(b"not an array")
    np.testing.assert_array_equal(cache.views(ct, state), good)
    np.save(path, np.zeros((3, 3), np.float32))  # wrong shape
    np.testing.assert_array_equal(cache.views(ct, state), good)
    assert projector.calls == 3


def test_failed_write_leaves_nothing(tmp_path, case, monkeypatch):
    ct, state = case
    cache = ViewCache(ParallelSum(), size=16, folder=tmp_path)

    def broken_save(file, array, allow_pickle):
        file.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        cache.views(ct, state)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_bad_settings_and_bad_projector(tmp_path, case):
    ct, state = case
    with pytest.raises(InputError, match="angles"):
        ViewCache(ParallelSum(), angles=(), folder=tmp_path)
    with pytest.raises(InputError, match="view size"):
        ViewCache(ParallelSum(), size=0, folder=tmp_path)
    with pytest.raises(InputError, match="returned views of shape"):
        ViewCache(ParallelSum(), size=32, folder=tmp_path).views(ct, state)  # the sum gives 16x16


def test_physics_projector_is_the_x2ct_benchmark_drr(tmp_path, case):
    import torch

    from x2ct.data.cache import PhysicsProjector
    from x2ct.data.protocol import to_hu
    from x2ct.physics import x2ct_views

    ct, state = case
    cache = ViewCache(PhysicsProjector(), angles=(0, 90), size=16, folder=tmp_path)
    views = cache.views(ct, state)
    hu = torch.from_numpy(to_hu(ct, state).array)[None, None]
    expected = x2ct_views(hu, (2.0, 2.0, 2.0), [0.0, 90.0], 16)[0].numpy()
    np.testing.assert_allclose(views, expected, atol=1e-6)
    assert views.min() >= 0.0 and views.max() <= 1.0 and not np.allclose(views[0], views[1])
    line_integrals = ViewCache(PhysicsProjector("beer-lambert"), angles=(0, 90), size=16, folder=tmp_path)
    assert line_integrals.key(ct, state) != cache.key(ct, state)
    integrals = line_integrals.views(ct, state)
    assert integrals.shape == (2, 16, 16) and integrals.max() > 0.1  # unnormalised sums of mu * mm
    with pytest.raises(InputError, match="DRR mode"):
        PhysicsProjector("exp")
