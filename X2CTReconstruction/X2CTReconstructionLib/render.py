"""Pictures of a scene without a screen: Slicer's slice views and 3D view rendered offscreen to PNG.

Built on trame-slicer's views, which run Slicer's own displayable managers
without Qt, so a picture shows what the Slicer application would show. The
headless tests and ``x2ct demo`` use it; inside 3D Slicer the application's
views serve instead (this module needs the ``trame-slicer`` package).

Rendering runs on the CPU (Mesa through EGL, no display needed). Two choices
keep it fast there: views render only when asked (not on every scene
change), and volume rendering uses the CPU ray caster, about 10x faster on
Mesa than the emulated GPU mapper.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import slicer
import vtk
from PIL import Image
from vtk.util.numpy_support import vtk_to_numpy

#: Slice views as in Slicer's conventional layout: name -> orientation.
SLICE_VIEWS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}
THREE_D_VIEW = "ThreeD"

#: Volume rendering method chosen before any display node exists (see module docstring).
CPU_VOLUME_RENDERING = "vtkMRMLCPURayCastVolumeRenderingDisplayNode"


def create_app():
    """A headless Slicer application whose scene is also ``slicer.mrmlScene``.

    Offscreen rendering uses EGL unless ``VTK_DEFAULT_OPENGL_WINDOW`` says
    otherwise (e.g. ``vtkOSOpenGLRenderWindow`` for OSMesa).
    """
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    from trame_slicer.core import SlicerApp

    app = SlicerApp()
    slicer.mrmlScene = app.scene
    app.volume_rendering.SetDefaultRenderingMethod(CPU_VOLUME_RENDERING)
    return app


class OffscreenViews:
    """Red/Yellow/Green slice views and one 3D view of an app's scene, rendered on demand."""

    def __init__(self, app, size: tuple[int, int] = (512, 512)):
        from trame_slicer.views import DirectViewFactory, NoScheduleRendering, ViewLayoutDefinition

        self.app = app
        self.views = {}
        factory = DirectViewFactory(do_render_offscreen=True)
        app.view_manager.register_factory(factory)
        definitions = [ViewLayoutDefinition.slice_view(orientation, label=name)
                       for name, orientation in SLICE_VIEWS.items()]
        definitions.append(ViewLayoutDefinition.threed_view(name=THREE_D_VIEW))
        warnings = vtk.vtkObject.GetGlobalWarningDisplay()
        vtk.vtkObject.GlobalWarningDisplayOff()  # VTK 9.6 warns about a resize event trame-slicer observes
        try:
            for definition in definitions:
                view = app.view_manager.create_view(definition)
                view.set_scheduled_render(NoScheduleRendering())
                view.update_size(*size)
                self.views[definition.singleton_tag] = view
        finally:
            vtk.vtkObject.SetGlobalWarningDisplay(warnings)

    def add_threed_view(self, name: str, size: tuple[int, int] | None = None):
        """Another 3D view, for the view node with layout name ``name`` (e.g. the MIP view); return it.

        Sized like the existing 3D view unless ``size`` is given.
        """
        from trame_slicer.views import NoScheduleRendering, ViewLayoutDefinition

        if name not in self.views:
            view = self.app.view_manager.create_view(ViewLayoutDefinition.threed_view(name=name))
            view.set_scheduled_render(NoScheduleRendering())
            view.update_size(*(size or self.views[THREE_D_VIEW].render_window().GetSize()))
            self.views[name] = view
        return self.views[name]

    def show_volume(self, node, level: float | None = None, width: float | None = None,
                    preset: str | None = "CT-Chest-Contrast-Enhanced", mip: bool = False) -> None:
        """Show ``node`` in the slice views (with a level/width window if given) and volume-render it.

        ``preset`` names a Slicer volume-rendering preset (None: no volume
        rendering); ``mip`` renders a maximum intensity projection instead
        (preset CT-MIP).
        """
        display = node.GetDisplayNode()
        if level is not None and width is not None:
            display.AutoWindowLevelOff()
            display.SetWindowLevel(width, level)
        for name in SLICE_VIEWS:
            self.views[name].set_background_volume_id(node.GetID())
        rendering = self.app.volume_rendering
        if preset is not None or mip:
            volume_display = rendering.create_display_node(node)
            rendering.apply_preset(volume_display, "CT-MIP" if mip else preset)
            volume_display.SetVisibility(True)
            self.views[THREE_D_VIEW].get_view_node().SetRaycastTechnique(
                slicer.vtkMRMLViewNode.MaximumIntensityProjection if mip else slicer.vtkMRMLViewNode.Composite)
        elif rendering.has_vr_display_node(node):
            rendering.get_vr_display_node(node).SetVisibility(False)
        for view in self.views.values():
            view.reset_view()

    def capture(self, name: str) -> np.ndarray:
        """Render view ``name`` now and return its pixels, (rows, columns, RGB) uint8, top row first."""
        view = self.views[name]
        view.render()
        grabber = vtk.vtkWindowToImageFilter()
        grabber.SetInput(view.render_window())
        grabber.SetInputBufferTypeToRGB()
        grabber.ReadFrontBufferOff()
        grabber.ShouldRerenderOff()
        grabber.Update()
        image = grabber.GetOutput()
        columns, rows, _ = image.GetDimensions()
        pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(rows, columns, 3)
        return np.ascontiguousarray(pixels[::-1])  # VTK's first row is the bottom one

    def save(self, folder, prefix: str = "", names=None) -> dict[str, Path]:
        """Render views (all by default) to ``folder/<prefix><name>.png``; return the paths by view name."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name in names or self.views:
            paths[name] = folder / f"{prefix}{name}.png"
            Image.fromarray(self.capture(name)).save(paths[name])
        return paths
