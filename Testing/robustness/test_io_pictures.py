"""Pictures as a phone or scanner writes them: the EXIF orientation tag turns the radiograph upright.

A camera stores the sensor's pixels and says in EXIF how to turn them;
ignoring the tag fed the model a radiograph on its side.
"""

import numpy as np
import pytest
from PIL import Image

from x2ct.io import read_xray

#: EXIF orientation -> how the stored pixels must turn to stand upright (numpy on the stored array).
UPRIGHT = {1: lambda a: a, 3: lambda a: np.rot90(a, 2), 6: lambda a: np.rot90(a, -1), 8: lambda a: np.rot90(a, 1),
           2: lambda a: a[:, ::-1]}


def _marked(rows=60, cols=90):
    """Dark picture with one bright block near the top-left corner: its place gives the orientation away."""
    array = np.full((rows, cols), 40, dtype=np.uint8)
    array[5:20, 5:25] = 220
    return array


@pytest.mark.parametrize("extension", [".jpg", ".png"])
@pytest.mark.parametrize("orientation", sorted(UPRIGHT))
def test_exif_orientation_is_honoured(tmp_path, extension, orientation):
    stored = _marked()
    picture = Image.fromarray(stored)
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    path = tmp_path / f"xray{extension}"
    picture.save(path, exif=exif.tobytes(), **({"quality": 95} if extension == ".jpg" else {}))
    image = read_xray(path).image
    expected = UPRIGHT[orientation](stored).astype(np.float32)
    assert image.shape == expected.shape
    assert np.abs(image - expected).mean() < 3.0, "the pixels were not turned as the EXIF tag says"
