"""The real-film benchmark section's measurements on a phantom whose answers are known."""

import numpy as np

from x2ct.benchmarks import realfilm
from x2ct.image import CANONICAL_DIRECTION, Volume
from x2ct.inference import Reconstruction


def chest_phantom() -> Volume:
    """A 64^3 chest in the canonical frame (superior-inferior, anterior-posterior, right-left): air around an
    elliptic body of soft tissue with two air-filled lungs either side of the midline."""
    hu = np.full((64, 64, 64), -1000.0, np.float32)
    _, j, i = np.mgrid[0:64, 0:64, 0:64]
    hu[((j - 32) / 20.0) ** 2 + ((i - 32) / 28.0) ** 2 <= 1] = 40.0
    for centre in (20, 44):
        hu[8:56][(((j - 30) / 12.0) ** 2 + ((i - centre) / 8.0) ** 2 <= 1)[8:56]] = -800.0
    return Volume(hu, (4.0, 4.0, 4.0), (0.0, 0.0, 0.0), CANONICAL_DIRECTION.copy())


def test_a_chest_phantom_has_two_lungs_a_denser_middle_and_air_around_it():
    from x2ct import physics

    volume = chest_phantom()
    view = physics.drr(volume, 0.0, mode="x2ct", x2ct_size=64).image
    result = Reconstruction(volume, None, [], "cpu", "phantom", view[None], (0.0,),
                            [{"likeness": {"score": 1.0, "threshold": 3.0}}])
    measured = realfilm.measure(result)
    assert measured["ncc"] > 0.99  # its own DRR as the input
    right, left = measured["lung_voxels"]
    assert right > 0 and left > 0 and abs(right - left) / (right + left) < 0.05
    assert measured["lung_median_hu"] == [-800.0, -800.0] and measured["mediastinum_hu"] == 40.0
    assert measured["air_share"] == np.mean(volume.array < -900)
    table = realfilm._table([("phantom", "none", measured)], False, (0.42, 0.51))
    assert "| phantom | none | 1.000 |" in table and "no git checkout" in table and "0.42-0.51" in table


def test_weights_of_an_unknown_commit_are_not_found(tmp_path):
    assert realfilm.model_at("0" * 40, tmp_path) is None
