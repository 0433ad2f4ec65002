"""X-rays in, CT in HU out: load a model, prepare the views as in training, run, convert back.

Views are prepared like the training DRRs (``x2ct.data``: X2CT-mode DRRs on
a 500 mm x 500 mm detector of 320 x 320 pixels, normalised per image to
[0, 1] with 8-bit levels, then resized to the model's view size) by
``x2ct.io.prepare``, the one place that does it: for a real film, borders
cropped, the chest centred and scaled to the training field (from the pixel
spacing and SID/SAD when known, else from the detected lung field) and the
intensities matched to the training DRRs; for a DRR made by x2ct, only the
field crop and normalisation. Each step is recorded in
``Reconstruction.preparation`` with the view's input-likeness score
(``x2ct.likeness``), and the notes say what the user must know (a warning
when a view is unlike the training inputs). The view angle comes from the
``XRay`` record, whose image already follows the x2ct view convention
(``x2ct.image``).

The output grid is the model protocol's: ``size``^3 voxels of
``crop_mm / size`` mm (320 / size for X2CT), canonical orientation, its
centre at the origin (the radiographs carry no position to place it).
``size`` is the model's volume size, or the card's ``output_size`` when
it gives one (models trained at 64^3 on a CPU are resampled, trilinear,
to the 128^3 protocol grid after fusion). HU
come from the protocol's window; for the Durham protocol (per-CT min-max of
[-1000, 1000] HU) the window ends stand for the unknown min and max, which
any CT with air and bone reaches.

Device memory pre-flight (``estimate_bytes``): float32 weights (4 bytes per
parameter) plus activations, taken as 64 float32 channels of the output grid
per sample drawn (4 * 64 * D^3 * samples), plus 25 % margin. It is a rough
upper guide for the networks here (their widest full-resolution layers have
at most 64 channels), not a bound for any network.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from x2ct import catalog, request
from x2ct.data.protocol import ProtocolState, get_protocol, to_hu
from x2ct.errors import InputError, X2CTError
from x2ct.image import CANONICAL_DIRECTION, Volume, XRay, view_angle
from x2ct.io.prepare import DETECTOR_MM, DETECTOR_PIXELS  # the X2CT detector: field (mm) and pixels

#: A view more than this gantry angle (degrees) from every view a model was trained on gets a warning.
UNTRAINED_DEG = 5.0

#: Activation channels assumed at the output grid by the memory estimate.
ACTIVATION_CHANNELS = 64
#: Fusion: side (mm) of every protocol's output cube (X2CT and Durham crop 320 mm), sweeps, and the
#: density exponent. On held-out pseudo-patients Henzler's beta = 2 cost more PSNR and lung Dice than
#: beta = 1 and 0.5 (it thins the chest wall that closes the lungs); 0.5 was best of the three.
FUSION_CUBE_MM, FUSION_SWEEPS, FUSION_BETA = 320.0, 5, 0.5
#: Normalised intensity taken as air by fusion: -900 HU in both protocols ((HU + 1024) / 2500 for X2CT,
#: (HU + 1000) / 2000 for Durham). Network outputs carry a haze of air around -900 HU; over the long air
#: paths beside the body it would otherwise take the corrections meant for the thin chest wall.
FUSION_AIR = 0.05

Progress = Callable[[float, str], None]


@dataclasses.dataclass
class LoadedModel:
    """A network ready to run and the facts about it."""

    id: str
    model: torch.nn.Module
    card: dict


@dataclasses.dataclass
class Reconstruction:
    """The CT in HU (``volume``), its per-voxel standard deviation in HU over samples (or None), and notes."""

    volume: Volume
    uncertainty: Volume | None
    notes: list[str]
    device: str
    model_id: str
    views: np.ndarray  # the prepared views (V, S, S) in [0, 1]
    angles: tuple[float, ...]
    preparation: list[dict] = dataclasses.field(default_factory=list)  # per view: steps and likeness (provenance)


def load(model: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A model by catalog id or model folder, on ``device``; weights checked against their sha256."""
    from x2ct.modelfile import load_model, read_card

    path = Path(model).expanduser()
    if path.exists() and not path.is_dir():
        raise InputError(f"--model {path} is a file; give a model folder (with model.json and model.safetensors) "
                         "or a catalog id.")
    if not path.is_dir():
        entry = catalog.find(str(model))
        if entry.source == "builtin":
            return LoadedModel(entry.id, _builtin(entry.id).to(device).eval(), {"name": entry.id})
        if entry.source == "shipped":
            expected = next(m["sha256"] for m in catalog.read_manifest()["models"] if m["id"] == entry.id)
            if read_card(entry.folder)["sha256"] != expected:
                raise InputError(f"The shipped model {entry.id} does not match the catalog's checksum; reinstall "
                                 "the extension.")
        path, model_id = entry.folder, entry.id
    else:
        model_id = path.name
    network, card = load_model(path, device)
    return LoadedModel(model_id, network, card)


def prepare_view(xray: XRay, size: int, kind: str = "auto") -> tuple[np.ndarray, list[str]]:
    """An X-ray -> a (size, size) float32 view in [0, 1] as the training DRRs are made; plus notes."""
    from x2ct.io.prepare import prepare

    prepared = prepare(xray, size, kind)
    return prepared.view, prepared.notes


def prepared_input(xray: XRay, size: int, kind: str = "auto") -> tuple[np.ndarray, dict, list[str]]:
    """(view, provenance record, notes): the prepared view, its preparation steps and input-likeness score."""
    from x2ct import likeness
    from x2ct.io.prepare import prepare

    prepared = prepare(xray, size, kind)
    angle = view_angle(xray.view)
    name = f"{_name(xray)} ({xray.view} view)"
    scored = prepared if size == likeness.VIEW_PIXELS else prepare(xray, likeness.VIEW_PIXELS, kind)
    score = likeness.score(scored.view, angle)
    record = {"view": _name(xray), "angle": float(angle), "kind": prepared.kind, "steps": prepared.steps,
              "likeness": None if score is None else score.as_dict()}
    notes = list(prepared.notes)
    notes.append(score.note(name) if score is not None else
                 f"{name}: no input-likeness model for a {angle:g} degree view; the score was not computed.")
    return prepared.view, record, notes


def untrained_views_note(model_id: str, card: dict, angles: Sequence[float]) -> str | None:
    """A WARNING when a view lies at an angle none of the model's training views had (its card's ``views``)."""
    trained = [view_angle(view) % 360.0 for view in card.get("views") or ()]
    if not trained:
        return None
    far = [a % 360.0 for a in angles if min(abs((a - t + 180.0) % 360.0 - 180.0) for t in trained) > UNTRAINED_DEG]
    if not far:
        return None
    return (f"WARNING {model_id} was trained on {' and '.join(map(str, card['views']))} views only "
            f"({', '.join(f'{t:g}' for t in trained)} deg), not on views at {', '.join(f'{a:g}' for a in far)} deg: "
            "the reconstruction is unreliable.")


def order_views(xrays: Sequence[XRay], spec) -> list[XRay]:
    """The X-rays in the order the model expects, or an InputError naming the views it needs."""
    angles = [view_angle(x.view) % 360.0 for x in xrays]
    given = f"(got {', '.join(f'{a:g}' for a in angles)} deg)"
    hint = (f"add the missing view with --view FILE:lateral {given}." if len(xrays) < min(spec.view_counts)
            else f"give fewer --view {given}.")
    problem = request.view_count_problem(spec.name, spec.view_counts, len(xrays), hint)
    if problem:
        raise InputError(problem)
    problem = request.same_angle_problem(angles)
    if problem:
        raise InputError(problem)
    trained = [float(a) % 360.0 for a in spec.default_angles]
    if len(xrays) == len(trained) and sorted(angles) == sorted(trained):
        return [xrays[angles.index(a)] for a in trained]
    return list(xrays)


def estimate_bytes(model: torch.nn.Module, volume_size: int, samples: int = 1) -> int:
    """Rough device memory (bytes) to run ``model``: see the module docstring."""
    weights = 4 * sum(p.numel() for p in model.parameters())
    activations = 4 * ACTIVATION_CHANNELS * volume_size ** 3 * max(1, samples)
    return int(1.25 * (weights + activations))


def choose_device(requested: str, model: torch.nn.Module, volume_size: int, samples: int = 1) -> tuple[str, str]:
    """(device, reason): ``auto`` takes CUDA if present and the estimate fits its free memory, else MPS, else CPU."""
    if requested != "auto":
        return request.torch_device(requested), f"{requested} as requested"
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if cuda:
        free, _ = torch.cuda.mem_get_info()
        needed = estimate_bytes(model, volume_size, samples)
        if needed <= free:
            return "cuda", f"CUDA ({needed / 2**20:.0f} MiB estimated, {free / 2**20:.0f} MiB free)"
        reason = f"CUDA has {free / 2**20:.0f} MiB free but about {needed / 2**20:.0f} MiB is needed"
    else:
        reason = "no CUDA device"
    if mps:
        return "mps", f"Apple MPS ({reason})"
    return "cpu", f"CPU ({reason})"


def output_state(protocol: str, size: int) -> ProtocolState:
    """Geometry and HU range of a model's output: canonical cube of crop_mm / size mm voxels centred at 0."""
    grid = get_protocol(protocol, size)
    spacing = grid.crop_voxels * grid.spacing_mm / size
    half = (size - 1) / 2.0 * spacing
    origin = tuple(float(v) for v in CANONICAL_DIRECTION @ np.full(3, -half))
    return ProtocolState(protocol=grid.name, size=size, spacing=(spacing,) * 3, origin=origin,
                         direction=tuple(float(d) for d in CANONICAL_DIRECTION.ravel()),
                         hu_low=float(grid.window[0]), hu_high=float(grid.window[1]))


def reconstruct(xrays: Sequence[XRay], model: str | Path | LoadedModel, device: str = "auto",
                fusion: bool = False, samples: int = 1, seed: int | None = None,
                progress: Progress | None = None, input_kind: str = "auto") -> Reconstruction:
    """Reconstruct a CT (HU, physical geometry) from X-rays with a catalog model or model folder.

    ``fusion``: Beer-Lambert fusion with the input views (``x2ct.models.fusion``;
    views at multiples of 90 degrees). ``samples`` > 1: the mean of that many
    draws and their standard deviation (models with ``sample``, i.e. code
    diffusion). ``seed`` seeds the draws (None: the model's own seed, so one
    input always gives the same volume; 0 for several samples); a
    deterministic model ignores it, with a note. ``progress(fraction, stage)`` is called from 0 to 1. ``input_kind``:
    ``auto``, ``film`` or ``drr`` (``x2ct.io.prepare``).
    """
    report = progress or (lambda fraction, stage: None)
    if not xrays:
        raise InputError("Give at least one X-ray view.")
    problem = request.samples_problem(str(model), True, samples) or request.seed_problem(seed)  # before loading
    if problem:
        raise InputError(problem)
    report(0.0, "loading model")
    loaded = model if isinstance(model, LoadedModel) else load(model, "cpu")
    network, spec = loaded.model, loaded.model.spec
    generative = callable(getattr(network, "sample", None))
    problem = request.samples_problem(loaded.id, generative, samples)
    if problem:
        raise InputError(problem)
    xrays = order_views(xrays, spec)
    chosen, reason = choose_device(device, network, spec.volume_size, samples)
    notes = [f"device: {reason}"]
    if seed is not None and not generative:
        notes.append(f"seed: {loaded.id} is deterministic, so the seed changes nothing.")
    report(0.2, "preparing views")
    prepared, preparation = [], []
    for xray in xrays:
        view, record, view_notes = prepared_input(xray, spec.view_size, input_kind)
        prepared.append(view)
        preparation.append(record)
        notes += view_notes
    views_np = np.stack(prepared)
    angles = tuple(view_angle(x.view) for x in xrays)
    untrained = untrained_views_note(loaded.id, loaded.card, angles)
    notes += [untrained] if untrained else []
    views = torch.from_numpy(views_np)[None].to(chosen)
    angle_tensor = torch.tensor(angles, dtype=torch.float32)[None].to(chosen)
    network = network.to(chosen).eval()
    report(0.3, f"reconstructing on {chosen}")
    with torch.no_grad():
        if samples > 1:
            output, spread = network.sample(views, angle_tensor, n=int(samples), seed=0 if seed is None else seed)
        elif generative and seed is not None:
            output, spread = network.sample(views, angle_tensor, n=1, seed=seed)[0], None
        else:
            output, spread = network(views, angle_tensor), None
    output = output.float().cpu()
    if not torch.isfinite(output).all() or (spread is not None and not torch.isfinite(spread).all()):
        raise X2CTError(f"Model {loaded.id} produced NaN or infinite values; nothing was written. Its weights "
                        "may be damaged: re-import or retrain it.")
    if fusion:
        report(0.8, "Beer-Lambert fusion")
        output = _fuse(output, views_np, angles, spec.volume_size, notes)
    report(0.9, "converting to HU")
    size = int(loaded.card.get("output_size") or spec.volume_size)
    if size != spec.volume_size:
        output = _resize_cube(output, size)
        spread = None if spread is None else _resize_cube(spread.float().cpu(), size)
        notes.append(f"output: the model's {spec.volume_size}^3 volume resampled (trilinear) to the {size}^3 "
                     "protocol grid, as its card says")
    state = output_state(spec.protocol, size)
    volume = to_hu(output[0, 0].numpy(), state)
    uncertainty = None
    if spread is not None:
        scale = np.float32(state.hu_high - state.hu_low)
        uncertainty = Volume(spread[0, 0].float().cpu().numpy() * scale, state.spacing, state.origin,
                             np.reshape(state.direction, (3, 3)))
    report(1.0, "done")
    return Reconstruction(volume, uncertainty, notes, chosen, loaded.id, views_np, angles, preparation)


def _fuse(output: torch.Tensor, views: np.ndarray, angles, size: int, notes: list[str]) -> torch.Tensor:
    """Fusion on the model grid, in the prepared views' own cone-beam geometry.

    The views are X2CT-mode DRRs of the 500 mm detector (about 285 mm at the
    isocentre, magnified 1.35-2.5 across the 320 mm cube), so the corrections
    run through the projector in that geometry (``cone_beam_fusion``) rather
    than stretching each view over the cube's face as parallel rays would.
    Intensities up to ``FUSION_AIR`` are fused as empty and come back as air (0).
    """
    from x2ct.models.fusion import cone_beam_fusion, cone_beam_residual

    target = torch.from_numpy(views)[None].double()
    density = (output - FUSION_AIR).clamp_min(0.0)  # the network's air haze (up to ~-900 HU) is no density
    spacing = (FUSION_CUBE_MM / size,) * 3
    geometry = _view_geometry(views.shape[-1])
    before = cone_beam_residual(density, target, list(angles), spacing, geometry)[0]
    fused = cone_beam_fusion(density, target, list(angles), spacing, geometry,
                             beta=FUSION_BETA, iterations=FUSION_SWEEPS).float()
    after = cone_beam_residual(fused, target, list(angles), spacing, geometry)[0]
    notes.append(f"fusion: {FUSION_SWEEPS} cone-beam sweeps (beta {FUSION_BETA:g}), mean relative ray "
                 "residual per view " + ", ".join(f"{float(b):.3g} -> {float(a):.3g}" for b, a in zip(before, after)))
    return torch.where(fused > 0, fused + FUSION_AIR, 0.0)


def _view_geometry(pixels: int):
    """The X2CT detector sampled as the prepared views are: its 320 pixel centres resized corner to corner."""
    from x2ct.physics import X2CT_GEOMETRY

    span = DETECTOR_MM * (DETECTOR_PIXELS - 1) / DETECTOR_PIXELS  # first to last pixel centre
    side = span * pixels / (pixels - 1) if pixels > 1 else DETECTOR_MM
    return dataclasses.replace(X2CT_GEOMETRY, detector_mm=(side, side), pixels=(pixels, pixels))


def _resize_cube(volume: torch.Tensor, size: int) -> torch.Tensor:
    """(1, 1, D, D, D) -> (1, 1, size, size, size), trilinear; both grids span the same protocol cube."""
    return F.interpolate(volume, size=(size,) * 3, mode="trilinear", align_corners=False)


def _builtin(model_id: str) -> torch.nn.Module:
    from x2ct.models import baselines

    _, view_size, volume_size = catalog.BUILTIN[model_id]
    return baselines.build(model_id, view_size=view_size, volume_size=volume_size)


def _name(xray: XRay) -> str:
    return Path(str(xray.metadata.get("source", "the X-ray"))).name or "the X-ray"
