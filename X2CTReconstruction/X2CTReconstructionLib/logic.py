"""What the X2CT Reconstruction module does to the scene, without Qt.

The module's Logic class (in ``X2CTReconstruction.py``) adds Slicer's
parameter-node plumbing on top of this class; everything else lives here so
that it runs, and is tested, headless on slicer-core. Every button of the
panel maps to one call, usable from Slicer's Python console:

    ct = logic.reconstruct(frontalNode, lateralNode, model="back-projection")
    ct = logic.reconstruct(frontalNode, lateralNode, extraViews=[(apNode, 180), (rightNode, 270)])

A reconstruction runs as a child process (``x2ct reconstruct --progress
json`` through ``x2ct.jobs.Job``; PythonSlicer inside Slicer), so Slicer
never freezes: ``startReconstruction`` returns a ``ReconstructionRun`` that
the caller polls (a ``qt.QTimer`` in the widget). The X-ray nodes cross to
the child as NRRD files in a temporary folder, and the CT comes back as one.
Nothing is added to the scene until the child has succeeded and its output
has been read; a failure or a cancel leaves the scene as it was.

Most of a child's time would go to importing torch and MONAI, so, with
``keepSpare`` (the default), a spare child (``x2ct.jobs.Spare``) is started
ahead, when the panel is shown (``prepareSpare``) and after each run, and
the next reconstruction runs in it with its imports already done.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import slicer

import x2ct.io
from x2ct import jobs, request
from x2ct.errors import InputError, X2CTError
from x2ct.image import view_angle
from X2CTReconstructionLib import compare as comparison
from X2CTReconstructionLib import dependencies
from X2CTReconstructionLib import outputs
from X2CTReconstructionLib import scene as scene_glue

#: Seconds between polls in ``ReconstructionRun.wait``.
POLL_SECONDS = 0.1

#: File name endings stripped to name a node after its file.
_DOUBLE_SUFFIXES = (".nii.gz",)


class ReconstructionLogic:
    """Loads X-rays and CTs into the scene through x2ct's readers and checks the inputs of a reconstruction."""

    def __init__(self, scene=None, applicationLogic=None, keepSpare: bool = True):
        self._scene = scene
        self._applicationLogic = applicationLogic
        self.keepSpare = keepSpare

    @property
    def scene(self):
        """The scene given at construction, else Slicer's current scene."""
        return self._scene or slicer.mrmlScene

    def loadXRay(self, path, view=None, pixelSpacing=None, name: str | None = None):
        """Read an X-ray file (DICOM CR/DX, PNG/JPEG/TIFF, NRRD/MHA) and add it as a one-slice volume node.

        ``view`` and ``pixelSpacing`` (row, column mm) override what the
        file says; the node keeps view, distances and metadata as attributes.
        """
        xray = x2ct.io.read_xray(path, view=view, pixel_spacing=pixelSpacing)
        return scene_glue.xray_node_from_xray(xray, name or node_name(path), self.scene)

    def loadCT(self, path, name: str | None = None):
        """Read a CT (DICOM folder, NIfTI, NRRD, MHA) in HU and add it as a scalar volume node."""
        volume = x2ct.io.read_ct(path)
        return scene_glue.volume_node_from_volume(volume, name or node_name(path), self.scene)

    def inputProblems(self, frontalNode, lateralNode=None, groundTruthNode=None, extraViews=()) -> list[str]:
        """Why these nodes cannot be reconstructed from / compared with, one line each (empty: they can).

        A frontal X-ray is required, a lateral one optional (single-view
        models exist); ``extraViews`` are more (X-ray node, angle in degrees)
        pairs. Every view must be a one-slice X-ray, used once, at its own
        angle. The ground truth, if given, must be a CT volume.
        """
        problems = []
        if frontalNode is None:
            problems.append("Select or load a frontal X-ray.")
        elif lateralNode is not None and frontalNode.GetID() == lateralNode.GetID():
            problems.append("The frontal and lateral inputs are the same node; choose two different X-rays.")
        for node, role in ((frontalNode, "Frontal"), (lateralNode, "Lateral")):
            if node is not None:
                problems.extend(_problem(lambda n=node: scene_glue.xray_from_volume_node(n), role))
        problems.extend(_extra_view_problems(frontalNode, lateralNode, extraViews))
        if groundTruthNode is not None:
            problems.extend(_problem(lambda: scene_glue.volume_from_volume_node(groundTruthNode, copy=False), "Ground truth"))
        given = [frontalNode, lateralNode, groundTruthNode] + [node for node, _ in extraViews]
        removed = [node.GetName() for node in given if node is not None and not outputs.in_scene(node, self.scene)]
        problems += [f"Node {name!r} is no longer in the scene; load or select it again." for name in removed]
        return problems

    # --- reconstruction ---------------------------------------------------------------------------

    def modelIds(self) -> list[str]:
        """Ids of every runnable model: built-ins, shipped, then the user's (``x2ct.catalog``)."""
        from x2ct import catalog

        return [entry.id for entry in catalog.entries()]

    def modelFacts(self, model) -> request.ModelFacts:
        """What a catalog model (or model folder) accepts: views, samples; from its card, no weights read."""
        return request.model_facts(model)

    def importModel(self, folder, modelId: str | None = None) -> str:
        """Copy a model folder (safetensors weights + card) into the user models folder; return its catalog id.

        The weights' sha256 must match the card and the file must be
        safetensors (its header is read; nothing is loaded or executed), else
        InputError says why and nothing is copied.
        """
        from x2ct import catalog

        return catalog.import_model(folder, modelId).id

    def importPublished(self, path, views: int | None = None, modelId: str | None = None) -> str:
        """Import the X2CT-GAN authors' released generator (a .pth file) as a catalog model; return its id.

        Runs ``x2ct catalog import-published`` in a background process (a
        paper-size network is built and ~250 MB written) while Slicer keeps
        processing events. The file is read with torch.load(weights_only=True)
        only; a refused file raises X2CTError with the reason and installs nothing.
        """
        from x2ct import catalog

        arguments = ["catalog", "import-published", "x2ct-gan", str(path)]
        arguments += ["--views", str(views)] if views else []
        arguments += ["--id", modelId] if modelId else []
        before = {entry.id for entry in catalog.entries()}
        job = jobs.Job(arguments)
        while job.running:
            job.poll()
            jobs.pause(POLL_SECONDS)
        if job.returncode != 0:
            raise X2CTError(job.error)
        added = [entry.id for entry in catalog.entries() if entry.id not in before]
        return added[0] if added else (modelId or "")

    def deviceChoices(self) -> list[str]:
        """Devices a reconstruction can be asked to run on here: auto and cpu, plus cuda / mps when present."""
        return request.available_devices()

    def requestProblems(self, facts, frontalNode, lateralNode=None, extraViews=(), device="auto", samples=1,
                        outputNode=None) -> list[str]:
        """Why this request of model ``facts`` cannot run (``x2ct.request``'s rules), one line each.

        The input nodes themselves are checked by ``inputProblems``.
        """
        inputs = [node.GetID() for node in (frontalNode, lateralNode, *(n for n, _ in extraViews)) if node]
        problems = request.Request(
            facts, views=1 + (lateralNode is not None) + len(extraViews), device=device, samples=samples,
            output=outputNode.GetID() if outputNode is not None else None, inputs=tuple(inputs),
            view_hint=view_hint(facts.view_counts, lateralNode is not None, len(extraViews))).problems()
        if device in ("cuda", "mps") and device not in self.deviceChoices():  # known here, before a child starts
            problems.append(request.unavailable_device(device))
        return problems

    def startReconstruction(self, frontalNode, lateralNode=None, model="back-projection", device="auto",
                            fusion=False, samples=1, outputNode=None, onProgress=None, onDone=None, extraViews=()):
        """Start reconstructing a CT from X-ray nodes in a background process; return its ReconstructionRun.

        ``model``: a catalog id, a model folder or ``modelFacts(...)`` of one
        (its card is then not read again; the child verifies the weights).
        ``extraViews``: more views as (X-ray node, gantry angle in degrees)
        pairs, for models that take more than two. Inputs, model id, view
        count, device and samples are checked first (InputError, nothing
        started). The run must then be polled (``run.poll()`` from a timer, or
        ``run.wait()``); ``onProgress(fraction, stage)`` and ``onDone(run)``
        are called from ``poll``. ``outputNode``, when given, receives the CT;
        otherwise a new node is added, named after the frontal X-ray and the model.
        """
        extraViews = [(node, angle) for node, angle in extraViews]
        problems = self.inputProblems(frontalNode, lateralNode, extraViews=extraViews)
        if problems:
            raise InputError(" ".join(problems))
        facts = model if isinstance(model, request.ModelFacts) else request.model_facts(model)
        problems = self.requestProblems(facts, frontalNode, lateralNode, extraViews, device, samples, outputNode)
        if outputNode is not None and not outputNode.IsA("vtkMRMLScalarVolumeNode"):
            problems.append(f"Output node {outputNode.GetName()!r} is not a scalar volume; choose a volume node "
                            "or let the module create one.")
        if problems:
            raise InputError(" ".join(problems))
        folder = Path(tempfile.mkdtemp(prefix="x2ct-reconstruct-"))
        try:
            arguments, records = ["reconstruct"], []
            views = [(role, node, scene_glue.xray_for_role(node, role)) for role, node in
                     (("frontal", frontalNode), ("lateral", lateralNode)) if node is not None]
            views += [("extra", node, scene_glue.xray_from_volume_node(node, view=float(angle)))
                      for node, angle in extraViews]
            for index, (role, node, xray) in enumerate(views):
                path = x2ct.io.write_xray(xray, folder / f"view{index}-{role}.nrrd")
                angle = view_angle(xray.view)
                arguments += ["--view", f"{path}:{angle:g}" if role == "extra" else str(path)]
                records.append({"node": node.GetName(), "role": role,
                                "view": str(xray.view), "angle_deg": angle,
                                "pixel_spacing_mm": list(xray.pixel_spacing), "size": list(xray.shape)})
            model_argument = str(facts.folder) if facts.source == "folder" else facts.id
            arguments += ["--model", model_argument, "--out", str(folder / "ct.nrrd"), "--device", device,
                          "--samples", str(int(samples)), "--progress", "json"]
            if fusion:
                arguments.append("--fusion")
            job = jobs.start(arguments)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return ReconstructionRun(self.scene, job, folder, facts, records, [node for _, node, _ in views],
                                 outputNode, onProgress, onDone, self.prepareSpare)

    def prepareSpare(self) -> bool:
        """With ``keepSpare``, have a spare child wait for the next reconstruction; whether one waits.

        None is started while a package the child needs is missing (it could
        only fail). Its imports take one core for a few seconds; unused, it ends
        after ``x2ct.jobs.SPARE_IDLE_SECONDS`` or with Slicer.
        """
        if not self.keepSpare or dependencies.missing():
            return False
        return jobs.keep_spare() is not None

    def reconstruct(self, frontalNode, lateralNode=None, model="back-projection", device="auto", fusion=False,
                    samples=1, outputNode=None, extraViews=()):
        """Reconstruct and wait: the CT volume node (blocking; for the Python console and scripts)."""
        return self.startReconstruction(frontalNode, lateralNode, model=model, device=device, fusion=fusion,
                                        samples=samples, outputNode=outputNode, extraViews=extraViews).wait()

    # --- outputs ----------------------------------------------------------------------------------

    def volumeRenderingLogic(self):
        """Slicer's volume-rendering module logic (from the application logic given at construction, else Slicer's)."""
        application = self._applicationLogic or slicer.app.applicationLogic()
        return application.GetModuleLogic("VolumeRendering")

    def showOutputs(self, ctNode, cutAway: bool = True, reprojection: bool = True, layout: bool = True) -> dict:
        """Show a reconstructed CT every way the module offers; return what was made, by name.

        Slice views: soft-tissue window (level 40, width 400 HU). 3D view: the
        CT-Chest-Contrast-Enhanced preset, cropped by a movable ROI that
        removes the anterior half (``cutAway``). A second 3D view (``X2CTMIP``)
        shows a MIP rendering (CT-MIP preset, MIP ray casting); ``layout``
        switches to a layout that shows it beside the main 3D view. MIPs
        frontal, lateral and axial as one-slice volume nodes. With
        ``reprojection`` and the input X-ray nodes still in the scene, the
        re-projection check. Calling it again updates the same nodes.
        Keys: ``volumeRendering``, ``roi``, ``mipRendering``, ``mipView``,
        ``mips`` (name -> node), ``reprojection`` (see ``reprojectionCheck``, or None).
        """
        volume = scene_glue.volume_from_volume_node(ctNode)
        scene = ctNode.GetScene()
        outputs.set_window(ctNode, outputs.CT_WINDOW)
        outputs.show_in_slice_views(ctNode, scene)
        logic = self.volumeRenderingLogic()
        main_view = outputs.three_d_view(scene)
        display = outputs.volume_rendering(ctNode, logic, outputs.CT_PRESET, [main_view] if main_view else [])
        roi_views = outputs.slice_view_nodes(scene) + ([main_view] if main_view else [])
        roi = outputs.cut_away_roi(ctNode, display, roi_views) if cutAway else None
        if not cutAway:
            display.SetCroppingEnabled(False)
        mip_view = outputs.mip_view(scene)
        mip_display = outputs.volume_rendering(ctNode, logic, outputs.MIP_PRESET, [mip_view], role="mip-rendering")
        if layout:
            outputs.switch_layout(scene, outputs.MIP_LAYOUT_ID)
        made = {"volumeRendering": display, "roi": roi, "mipRendering": mip_display, "mipView": mip_view,
                "mips": outputs.mip_nodes(ctNode, volume), "reprojection": None}
        inputs = outputs.input_nodes(ctNode)
        if reprojection and inputs:
            made["reprojection"] = self.reprojectionCheck(ctNode, inputs)
        return made

    def reprojectionCheck(self, ctNode, xrayNodes=None) -> dict:
        """DRRs of the CT at the X-rays' views, added beside them, and their NCC with the X-rays.

        ``xrayNodes`` defaults to the inputs referenced by the CT node; each
        input is rendered at the view the model was given (its entry in
        ``X2CT.Views``, extra views' angles included). The NCC
        of each view is stored on its DRR node (``X2CT.NCC``) and, by view, on
        the CT node (``X2CT.ReprojectionNCC``). Returns ``{"drrs": [nodes],
        "ncc": [floats], "views": [views]}``.
        """
        return outputs.reprojection_check(ctNode, xrayNodes)

    def compare(self, predictedNode, groundTruthNode):
        """Score a reconstruction against a ground-truth CT; return the metrics table node.

        Adds the ground truth resampled onto the prediction's grid (centres
        aligned, see ``compare``), the difference volume (prediction - ground
        truth, HU) and the table (every metric convention and lung Dice), then
        switches to a two-row layout of linked slice views: prediction above,
        ground truth below. The table references the prediction, the two
        volumes and the ground truth (node reference roles ``x2ctPrediction``,
        ``x2ctAlignedGroundTruth``, ``x2ctDifference``, ``x2ctGroundTruth``).
        Comparing the same pair again updates these nodes instead of adding others.
        """
        return comparison.compare_nodes(predictedNode, groundTruthNode)


class ReconstructionRun:
    """One background reconstruction: poll it, cancel it, or wait for its CT node.

    ``fraction`` (0..1) and ``stage`` follow the child's progress;
    ``outputNode`` is the CT node once it succeeded (``uncertaintyNode`` too
    when several samples were drawn); ``error`` is the child's one-line
    message after a failure; ``cancelled`` is true after ``cancel``.
    """

    def __init__(self, scene, job, folder: Path, facts: request.ModelFacts, views: list[dict], inputs: list, outputNode,
                 onProgress, onDone, onClosed=None):
        self.scene = scene
        self.fraction = 0.0
        self.stage = "starting"
        self.error = None
        self.cancelled = False
        self.finished = False
        self.outputNode = None
        self.uncertaintyNode = None
        self.notes: list[str] = []
        self._job = job
        self._folder = folder
        self._facts = facts
        self._views = views
        self._inputs = inputs
        self._target = outputNode
        self._on_progress = onProgress
        self._on_done = onDone
        self._on_closed = onClosed  # after the run, before onDone: e.g. start a spare child for the next one
        self._result = None

    def poll(self) -> bool:
        """Handle the child's news since the last call; True while the run goes on."""
        if self.finished:
            return False
        running = self._job.running
        for event in self._job.poll():
            self._handle(event)
        if not running:
            self._finish()
        return not self.finished

    def cancel(self, wait: bool = True) -> None:
        """Stop the child (its whole process tree) and drop its output; the scene is left untouched.

        ``wait=False`` (the panel's Cancel) returns at once: the run ends, and
        calls ``onDone``, in the ``poll`` that sees the child gone.
        """
        if self.finished:
            return
        self.cancelled = True
        self.stage = "cancelling"
        self._job.cancel(wait=wait)
        if wait:
            self._finish()

    def wait(self, timeout: float | None = None):
        """Poll until the run ends; the CT node, or X2CTError with the reason (failure, cancel, timeout)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise X2CTError(f"The reconstruction was still running after {timeout:g} s and was cancelled.")
            jobs.pause(POLL_SECONDS)
        if self.cancelled:
            raise X2CTError("The reconstruction was cancelled.")
        if self.error:
            raise X2CTError(self.error)
        return self.outputNode

    def _handle(self, event: dict) -> None:
        if "progress" in event:
            self.fraction = min(1.0, max(0.0, float(event["progress"])))
            self.stage = str(event.get("stage", self.stage))
            if self._on_progress is not None:
                self._on_progress(self.fraction, self.stage)
        elif event.get("done"):
            self._result = event

    def _finish(self) -> None:
        if self.cancelled:  # whatever the child wrote meanwhile is dropped
            self.stage = "cancelled"
            self._close()
            return
        if self._job.returncode == 0 and self._result is not None:
            try:
                self._add_outputs()
            except X2CTError as error:
                self.error = str(error)
            except Exception as error:  # noqa: BLE001 - a poll timer must end the run and say why, not raise
                logging.exception("X2CT: adding the reconstruction to the scene failed")
                self.error = f"The CT was made but could not be added to the scene ({error}); see the Python log."
        else:
            self.error = _cli_message(self._job.error) or "The reconstruction stopped without a result."
        self.stage = "failed" if self.error else "done"
        if not self.error:
            self.fraction = 1.0
            for note in self.notes:  # the Python console shows logged warnings; the panel shows the notes too
                if note.startswith("WARNING"):
                    logging.warning("X2CT: %s", note)
        self._close()

    def _add_outputs(self) -> None:
        """Read the child's files, then (only then) add or fill the nodes."""
        volume = x2ct.io.read_ct(self._result["output"])
        uncertainty = x2ct.io.read_ct(self._result["uncertainty"]) if self._result.get("uncertainty") else None
        self.notes = [_named_after_nodes(note, self._views) for note in self._result.get("notes", [])]
        added = []
        present = [node for node in self._inputs if outputs.in_scene(node, self.scene)]
        if len(present) < len(self._inputs):
            self.notes.append("An input X-ray node was removed from the scene during the run; the CT keeps the "
                              "names of its views in its provenance.")
        try:
            earlier = []  # uncertainty nodes of the CT this run refills: reused, or removed (they describe it no more)
            if outputs.in_scene(self._target, self.scene):
                node = self._target
                earlier = outputs.uncertainty_nodes_of(node, self.scene)
                outputs.fill_volume_node(node, volume)
            else:
                if self._target is not None:
                    self.notes.append(f"The output node {self._target.GetName()!r} was removed from the scene "
                                      "during the run, so the CT was added as a new node.")
                name = f"{self._views[0]['node']} CT ({self._facts.id})"
                node = scene_glue.volume_node_from_volume(volume, name, self.scene)
                added.append(node)
            stale = earlier[1:] if uncertainty is not None else earlier
            self.notes += [f"Removed {old.GetName()!r}: the uncertainty of the CT this run replaced." for old in stale]
            outputs.set_provenance(node, self._facts.id, self._facts.sha256, self._views, volume, self.notes,
                                   self._result.get("device", ""), self._inputs)
            study_anchor = (present or self._inputs)[0]  # a removed node is in no study: nothing is placed
            outputs.place_in_study(node, study_anchor)
            if uncertainty is not None and earlier:
                self.uncertaintyNode = earlier[0]
                outputs.fill_volume_node(self.uncertaintyNode, uncertainty)
            elif uncertainty is not None:
                spread = scene_glue.volume_node_from_volume(uncertainty, f"{node.GetName()} uncertainty (SD, HU)",
                                                            self.scene)
                added.append(spread)
                spread.SetNodeReferenceID(outputs.UNCERTAINTY_OF, node.GetID())
                outputs.place_in_study(spread, study_anchor)
                self.uncertaintyNode = spread
        except Exception:
            for added_node in added:
                self.scene.RemoveNode(added_node)
            raise
        for old in stale:
            self.scene.RemoveNode(old)
        self.outputNode = node

    def _close(self) -> None:
        self.finished = True
        shutil.rmtree(self._folder, ignore_errors=True)
        if self._on_closed is not None and not self.cancelled:  # a cancel may come from Slicer closing
            self._on_closed()
        if self._on_done is not None:
            self._on_done(self)


def view_hint(counts, lateral: bool, extra: int) -> str:
    """How to fix a view count in the panel's terms (frontal + ``lateral`` + ``extra`` views given)."""
    given, low, high = 1 + int(lateral) + extra, min(counts), max(counts)
    if given < low:
        if lateral:
            return "add views under More views."
        return "select a lateral X-ray and add views under More views." if low > 2 else "select a lateral X-ray."
    if given > high:
        return "remove views under More views." if extra else "clear the lateral X-ray."
    return ""


def _named_after_nodes(note: str, views: list[dict]) -> str:
    """A child's note with the views' temporary file names (``view0-frontal.nrrd``) replaced by their node names."""
    for index, record in enumerate(views):
        note = note.replace(f"view{index}-{record['role']}.nrrd", repr(record["node"]))
    return note


def _cli_message(line: str | None) -> str | None:
    """The CLI's error line without its ``x2ct reconstruct: error:`` prefix."""
    if not line:
        return line
    marker = "error:"
    index = line.lower().find(marker)
    return line[index + len(marker):].strip() if line.startswith("x2ct") and index >= 0 else line


def node_name(path) -> str:
    """A node name from a file or folder name, without its format suffix (chest.nii.gz -> chest)."""
    path = Path(path)
    name = path.name
    for ending in _DOUBLE_SUFFIXES:
        if name.lower().endswith(ending):
            return name[: -len(ending)]
    return path.stem if path.suffix else name


def _extra_view_problems(frontalNode, lateralNode, extraViews) -> list[str]:
    """What is wrong with the extra (node, angle) views: no node, not an X-ray, a node or an angle used twice."""
    problems = []
    used = {node.GetID() for node in (frontalNode, lateralNode) if node is not None}
    angles = [_node_angle(node, role) for node, role in ((frontalNode, "frontal"), (lateralNode, "lateral"))
              if node is not None]
    for row, (node, angle) in enumerate(extraViews, start=1):
        try:
            angle = view_angle(float(angle))
        except (InputError, TypeError, ValueError):
            problems.append(f"More views, row {row}: angle {angle!r} is not a number of degrees.")
            continue
        label = f"View at {angle:g} deg"
        angles.append(angle)
        if node is None:
            problems.append(f"{label}: select an X-ray or remove the row.")
            continue
        if node.GetID() in used:
            problems.append(f"{label}: X-ray {node.GetName()!r} is already used for another view; "
                            "each view needs its own X-ray.")
        used.add(node.GetID())
        problems.extend(_problem(lambda n=node: scene_glue.xray_from_volume_node(n), label))
    same_angle = request.same_angle_problem(angles)
    return problems + [same_angle] if same_angle else problems


def _node_angle(node, role: str) -> float | None:
    """The gantry angle a frontal/lateral input is taken at: its ``x2ct.view`` attribute, else its role."""
    try:
        return view_angle(node.GetAttribute(scene_glue.VIEW_ATTRIBUTE) or role)
    except InputError:
        return None  # an unreadable view attribute is reported when the X-ray is read


def _problem(check, role: str) -> list[str]:
    try:
        check()
    except InputError as error:
        return [f"{role}: {error}"]
    return []
