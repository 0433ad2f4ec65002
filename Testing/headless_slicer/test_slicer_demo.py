"""The Slicer half of x2ct demo on a reduced run (back-projection only): renders, compare, and a .mrb that loads back."""

import json

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slicer


def test_reduced_demo_renders_views_and_writes_a_scene_that_loads_back(slicer_app, scene, tmp_path):
    from x2ct import demo
    from X2CTReconstructionLib import demoscene

    demo.run(tmp_path, log=lambda line: None, models=["back-projection"], radiograph=False)
    records = json.loads((tmp_path / "metrics.json").read_text())["runs"]
    for field in ("name", "model", "views", "fusion", "seconds", "metrics", "reprojection"):
        assert field in records[0]
    assert {"x2ct", "repeat_concatenate", "honest", "lung_dice"} <= set(records[0]["metrics"])

    written = demoscene.build(records, tmp_path, log=lambda line: None, app=slicer_app)
    stem = "chest-ct-back-projection"
    pictures = {what: np.asarray(Image.open(written[f"{stem}-{what}"]), dtype=np.float32)
                for what in ("slices", "cutaway", "volume-rendering", "mip", "slicer-side-by-side")}
    for what, pixels in pictures.items():
        assert pixels.std() > 5.0, f"{what} render is blank"
    assert np.abs(pictures["cutaway"] - pictures["volume-rendering"]).mean() > 1.0  # the ROI crops something

    table = scene.GetFirstNodeByName(f"{stem} metrics")
    assert table is not None and table.GetNumberOfRows() > 10

    scene.Clear(0)
    assert slicer_app.io_manager.load_scene(written["scene"])
    names = {scene.GetNthNodeByClass(n, "vtkMRMLScalarVolumeNode").GetName()
             for n in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))}
    assert {demoscene.GROUND_TRUTH, stem, "chest-ct DRR frontal", "chest-ct DRR lateral",
            f"{stem} MIP frontal"} <= names
    loaded = scene.GetFirstNodeByName(stem)
    assert loaded.GetImageData() is not None and loaded.GetImageData().GetDimensions() == (128, 128, 128)
    assert scene.GetFirstNodeByName(f"{stem} metrics") is not None
    assert scene.GetNumberOfNodesByClass("vtkMRMLMarkupsROINode") >= 1
