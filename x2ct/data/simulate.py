"""Pseudo-patients: random but plausible chest CTs made from the real template CT.

With no public paired data reachable here, the models train and are tested
on variations of the one real chest CT we have (``x2ct.sampledata`` case
"chest-ct", with its organ label map). Each seed gives, deterministically:

* body habitus: anisotropic scaling (wider, deeper, longer), a small turn
  about the body axis and a shift of the patient in the field;
* a smooth random elastic deformation (a coarse grid of random displacements
  upsampled with cubic splines);
* lung inflation: the lungs expand or shrink about their centres, and their
  parenchyma gets less or more dense with the volume (mass conserved:
  HU + 1000 scales with 1 / volume);
* 0-3 inserted nodules (soft-tissue ellipsoids with a soft edge, wholly inside
  the lungs, recorded as ``NODULE_LABEL`` in the label map);
* contrast (the template is contrast-enhanced: blood is blended towards
  unenhanced HU by a random amount), a global intensity gain and offset, and
  CT-like correlated noise.

The work happens on the protocol's output grid (128^3 at 2.5 mm by default):
the template is resampled once per process onto a slightly larger cube, then
every pseudo-patient is one pull-back warp of that cube (linear for HU,
nearest neighbour for labels). The output sits in the same box that
``Protocol.resample`` gives the template, so it is ready for
``Protocol.normalise``.
"""

from __future__ import annotations

import csv
import dataclasses
import functools

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from x2ct.data.protocol import AIR_HU, X2CT, Grid, Protocol, resample
from x2ct.errors import InputError
from x2ct.image import CANONICAL_DIRECTION, Volume, volume_from_sitk

#: Disjoint seed ranges: pseudo-patients for training, validation and testing.
TRAIN_SEEDS = range(0, 10000)
VALIDATION_SEEDS = range(10000, 11000)
TEST_SEEDS = range(20000, 21000)
SEED_RANGES = {"train": TRAIN_SEEDS, "validation": VALIDATION_SEEDS, "test": TEST_SEEDS}

#: Label of inserted nodules (the template's labels stop at 118).
NODULE_LABEL = 200
#: Highest HU kept (12-bit CT scale).
MAX_HU = 3071.0
#: Template structures whose blood is contrast-enhanced (label names in chest-ct-structures.csv).
BLOOD_STRUCTURES = ("heart", "aorta", "pulmonary_vein", "brachiocephalic_trunk", "subclavian_artery",
                    "common_carotid_artery", "brachiocephalic_vein", "atrial_appendage", "vena_cava",
                    "portal_vein_and_splenic_vein")


def seeds(split: str) -> range:
    """The seed range of a split: 'train', 'validation' or 'test'."""
    if split not in SEED_RANGES:
        raise InputError(f"Unknown split {split!r}; choose one of: {', '.join(SEED_RANGES)}.")
    return SEED_RANGES[split]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Ranges of the random variations (uniform unless said otherwise)."""

    scale_lr: tuple[float, float] = (0.88, 1.12)     # patient width
    scale_ap: tuple[float, float] = (0.85, 1.15)     # patient depth
    scale_si: tuple[float, float] = (0.93, 1.07)     # patient length
    turn_deg: float = 3.0                            # rotation about the body axis, +-
    shift_mm: tuple[float, float] = (6.0, 10.0)      # in-plane and body-axis shift, +-
    elastic_mm: float = 6.0                          # standard deviation of control-point displacements
    elastic_points: int = 5                          # control points per axis
    lung_scale: tuple[float, float] = (0.90, 1.10)   # linear lung inflation factor
    nodules: tuple[int, int] = (0, 3)                # count, inclusive
    nodule_radius_mm: tuple[float, float] = (3.0, 10.0)
    nodule_hu: tuple[float, float] = (-30.0, 80.0)
    contrast: tuple[float, float] = (0.0, 1.0)       # 0 keeps the enhancement, 1 removes it
    gain_sd: float = 0.02                            # (HU + 1000) gain, normal
    offset_sd_hu: float = 8.0                        # HU offset, normal
    noise_hu: tuple[float, float] = (6.0, 20.0)      # noise standard deviation


DEFAULT_SETTINGS = Settings()


@dataclasses.dataclass
class PseudoPatient:
    """A simulated CT (HU) and its label map on the same grid, with the draws that made them."""

    seed: int
    ct: Volume
    labels: Volume
    parameters: dict


@dataclasses.dataclass(frozen=True)
class Template:
    """The template CT and labels on a work cube larger than the output cube by ``margin`` voxels."""

    hu: np.ndarray          # float32 (m, m, m)
    labels: np.ndarray      # uint8 (m, m, m)
    lung_weight: np.ndarray  # float32 (m, m, m): smoothed lung mask, 1 deep in the lungs
    grid: Grid               # the output cube
    margin: int
    lung_labels: tuple[int, ...]
    blood_labels: tuple[int, ...]
    lung_centres: np.ndarray  # (2, 3) work-cube index (k, j, i) of the right and left lung centres
    midline_i: float          # work-cube i between the two lungs


def pseudo_patient(seed: int, protocol: Protocol = X2CT, settings: Settings = DEFAULT_SETTINGS) -> PseudoPatient:
    """The pseudo-patient of ``seed`` on ``protocol``'s output grid (same seed, same patient)."""
    if int(seed) != seed or seed < 0:
        raise InputError(f"A simulator seed is a non-negative integer, got {seed!r}.")
    template = load_template(protocol.size, protocol.spacing_mm, protocol.crop_mm)
    rng = np.random.default_rng(int(seed))
    n, spacing = template.grid.n, template.grid.spacing
    params: dict = {"seed": int(seed)}

    coords = _habitus(template, rng, settings, params)  # (3, n, n, n) work-cube indices
    coords += _elastic(n, spacing, rng, settings, params)
    coords = _inflate_lungs(template, coords, rng, settings, params)
    hu = _sample(template.hu, coords, "bilinear", AIR_HU)
    labels = _sample(template.labels.astype(np.float32), coords, "nearest", 0).astype(np.uint8)

    inflation = params["lung_scale"]
    lung = np.isin(labels, template.lung_labels)
    parenchyma = lung & (hu < -300)
    hu[parenchyma] = -1000.0 + (hu[parenchyma] + 1000.0) / inflation ** 3
    _contrast(hu, labels, template, rng, settings, params)
    _insert_nodules(hu, labels, lung, template.grid, rng, settings, params)
    gain = 1.0 + settings.gain_sd * rng.standard_normal()
    offset = settings.offset_sd_hu * rng.standard_normal()
    hu = (hu + 1000.0) * gain - 1000.0 + offset
    hu += _noise(n, rng, settings, params)
    params.update(gain=float(gain), offset_hu=float(offset))
    hu = np.clip(hu, AIR_HU, MAX_HU).astype(np.float32)
    return PseudoPatient(int(seed), template.grid.volume(hu), template.grid.volume(labels), params)


def load_template(size: int = 128, spacing_mm: float = 1.0, crop_mm: float = 320.0) -> Template:
    """The template on a work cube for the protocol geometry (cached per process)."""
    return _template(int(size), float(spacing_mm), float(crop_mm))


@functools.lru_cache(maxsize=2)
def _template(size: int, spacing_mm: float, crop_mm: float) -> Template:
    import SimpleITK as sitk

    from x2ct import sampledata

    files = sampledata.fetch("chest-ct")
    ct = volume_from_sitk(sitk.ReadImage(str(files["chest-ct.nii.gz"])))
    ct = ct.with_array(np.maximum(ct.array.astype(np.float32), AIR_HU))  # -2048 outside the scan's field
    label_map = volume_from_sitk(sitk.ReadImage(str(files["chest-ct-labels.nii.gz"])))
    names = _structure_names(files["chest-ct-structures.csv"])
    lung_labels = tuple(sorted(i for i, name in names.items() if name.startswith("lung_") and "lobe" in name))
    blood_labels = tuple(sorted(i for i, name in names.items() if any(s in name for s in BLOOD_STRUCTURES)))
    if len(lung_labels) != 5:
        raise InputError(f"The template's structure list names {len(lung_labels)} lung lobes, expected 5.")

    protocol = Protocol(size=size, spacing_mm=spacing_mm, crop_mm=crop_mm)
    grid = protocol.output_grid(ct)
    margin = int(np.ceil(0.15 * size))
    work = Grid(grid.n + 2 * margin, grid.spacing,
                tuple(np.asarray(grid.origin) - CANONICAL_DIRECTION @ np.full(3, margin * grid.spacing)))
    hu = resample(ct, work, AIR_HU).array.astype(np.float32)
    labels = resample(label_map, work, 0, interpolator="nearest").array.astype(np.uint8)

    lung = np.isin(labels, lung_labels)
    lung_weight = ndimage.gaussian_filter(lung.astype(np.float32), sigma=6.0 / grid.spacing)
    lung_weight = np.clip(lung_weight * 2.0, 0.0, 1.0)  # 1 inside, fading over ~1 cm outside
    right = np.isin(labels, [i for i in lung_labels if "right" in names[i]])
    left = np.isin(labels, [i for i in lung_labels if "left" in names[i]])
    centres = np.array([np.argwhere(right).mean(axis=0), np.argwhere(left).mean(axis=0)])
    midline = float(centres[:, 2].mean())
    for array in (hu, labels, lung_weight):
        array.setflags(write=False)
    return Template(hu, labels, lung_weight, grid, margin, lung_labels, blood_labels, centres, midline)


def _structure_names(path) -> dict[int, str]:
    with open(path, newline="") as handle:
        return {int(row["id"]): row["structure"] for row in csv.DictReader(handle)}


def _habitus(template: Template, rng, settings: Settings, params: dict) -> np.ndarray:
    """Pull-back coordinates of a scaling about the lungs' centre, a turn about the body axis and a shift."""
    n, spacing, margin = template.grid.n, template.grid.spacing, template.margin
    scale = np.array([rng.uniform(*settings.scale_si), rng.uniform(*settings.scale_ap),
                      rng.uniform(*settings.scale_lr)])  # (k, j, i)
    turn = np.radians(rng.uniform(-settings.turn_deg, settings.turn_deg))
    shift_mm = np.array([rng.uniform(-settings.shift_mm[1], settings.shift_mm[1]),
                         rng.uniform(-settings.shift_mm[0], settings.shift_mm[0]),
                         rng.uniform(-settings.shift_mm[0], settings.shift_mm[0])])
    params.update(scale_si_ap_lr=scale.tolist(), turn_deg=float(np.degrees(turn)),
                  shift_mm_si_ap_lr=shift_mm.tolist())
    centre = template.lung_centres.mean(axis=0)
    index = np.arange(n, dtype=np.float32) + margin
    k, j, i = np.meshgrid(index, index, index, indexing="ij", sparse=True)
    dk, dj, di = k - centre[0] - shift_mm[0] / spacing, j - centre[1] - shift_mm[1] / spacing, \
        i - centre[2] - shift_mm[2] / spacing
    cos, sin = np.float32(np.cos(turn)), np.float32(np.sin(turn))
    coords = np.empty((3, n, n, n), dtype=np.float32)
    coords[0] = centre[0] + dk / scale[0]
    coords[1] = centre[1] + (cos * dj + sin * di) / scale[1]
    coords[2] = centre[2] + (-sin * dj + cos * di) / scale[2]
    return coords


def _elastic(n: int, spacing: float, rng, settings: Settings, params: dict) -> np.ndarray:
    """A smooth random displacement field (voxels): coarse random grid, cubic then linear upsampling."""
    points = settings.elastic_points
    coarse = rng.standard_normal((3, points, points, points)) * (settings.elastic_mm / spacing)
    fine = np.stack([ndimage.zoom(c, 16 / points, order=3, mode="nearest") for c in coarse])
    field = F.interpolate(torch.from_numpy(fine.astype(np.float32))[None], size=(n, n, n),
                          mode="trilinear", align_corners=True)[0].numpy()
    params["elastic_rms_mm"] = float(np.sqrt((field ** 2).sum(axis=0).mean()) * spacing)
    return field


def _inflate_lungs(template: Template, coords: np.ndarray, rng, settings: Settings, params: dict) -> np.ndarray:
    """Scale each lung about its centre by a common factor, fading out over ~1 cm around the lungs."""
    factor = rng.uniform(*settings.lung_scale)
    params["lung_scale"] = float(factor)
    weight = _sample(template.lung_weight, coords, "bilinear", 0.0)
    left = coords[2] > template.midline_i  # larger i is the patient's left
    for axis in range(3):
        centre = np.where(left, template.lung_centres[1, axis], template.lung_centres[0, axis]).astype(np.float32)
        coords[axis] += weight * np.float32(1.0 - 1.0 / factor) * (centre - coords[axis])
    return coords


def _sample(volume: np.ndarray, coords: np.ndarray, mode: str, fill: float) -> np.ndarray:
    """``volume`` at index coordinates ``coords`` (3, ...) in (k, j, i) order; ``fill`` outside."""
    size = np.asarray(volume.shape, dtype=np.float32)
    grid = np.stack([2.0 * coords[2 - a] / (size[2 - a] - 1) - 1.0 for a in range(3)], axis=-1)
    source = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32) - np.float32(fill))[None, None]
    out = F.grid_sample(source, torch.from_numpy(grid.astype(np.float32))[None], mode=mode,
                        padding_mode="zeros", align_corners=True)
    return out[0, 0].numpy() + np.float32(fill)


def _contrast(hu, labels, template: Template, rng, settings: Settings, params: dict) -> None:
    """Blend enhanced blood (> 100 HU in vessel and heart labels) towards unenhanced blood (40 HU)."""
    amount = rng.uniform(*settings.contrast)
    params["contrast_removed"] = float(amount)
    blood = np.isin(labels, template.blood_labels) & (hu > 100.0)
    hu[blood] += np.float32(amount) * (40.0 - hu[blood])


def _insert_nodules(hu, labels, lung, grid: Grid, rng, settings: Settings, params: dict) -> None:
    """Soft-edged soft-tissue ellipsoids wholly inside the lungs (1.5 voxels of lung around each)."""
    count = int(rng.integers(settings.nodules[0], settings.nodules[1] + 1))
    candidates = np.argwhere(lung)
    free = lung.copy()
    params["nodules"] = []
    for _ in range(count):
        radius = rng.uniform(*settings.nodule_radius_mm)
        axes = radius * rng.uniform(0.8, 1.2, size=3) / grid.spacing  # semi-axes in voxels (k, j, i)
        value = rng.uniform(*settings.nodule_hu)
        for _attempt in range(50):
            if len(candidates) == 0:
                break
            centre = candidates[rng.integers(len(candidates))] + rng.uniform(-0.5, 0.5, size=3)
            low = np.maximum(np.floor(centre - axes - 2).astype(int), 0)
            high = np.minimum(np.ceil(centre + axes + 3).astype(int), lung.shape)
            box = tuple(slice(a, b) for a, b in zip(low, high))
            k, j, i = np.ogrid[box]
            rho = np.sqrt(((k - centre[0]) / axes[0]) ** 2 + ((j - centre[1]) / axes[1]) ** 2
                          + ((i - centre[2]) / axes[2]) ** 2)
            guard = np.sqrt(((k - centre[0]) / (axes[0] + 1.5)) ** 2 + ((j - centre[1]) / (axes[1] + 1.5)) ** 2
                            + ((i - centre[2]) / (axes[2] + 1.5)) ** 2) <= 1.0
            if np.any(high - low < 2 * axes + 3) or not free[box][guard].all():
                continue  # too close to the edge of the lungs or of the field
            alpha = np.clip((1.15 - rho) / 0.3, 0.0, 1.0).astype(np.float32)
            hu[box] = hu[box] * (1.0 - alpha) + np.float32(value) * alpha
            labels[box][rho <= 1.0] = NODULE_LABEL
            free[box][guard] = False
            position = np.asarray(grid.origin) + CANONICAL_DIRECTION @ (centre[::-1] * grid.spacing)
            params["nodules"].append({"centre_lps_mm": position.round(2).tolist(),
                                      "semi_axes_mm_si_ap_lr": (axes * grid.spacing).round(2).tolist(),
                                      "hu": round(float(value), 1)})
            break


def _noise(n: int, rng, settings: Settings, params: dict) -> np.ndarray:
    """CT-like noise: white noise slightly smoothed (correlated), scaled to a random standard deviation."""
    sigma = rng.uniform(*settings.noise_hu)
    params["noise_hu"] = float(sigma)
    noise = ndimage.gaussian_filter(rng.standard_normal((n, n, n), dtype=np.float32), sigma=0.6)
    return noise * np.float32(sigma / max(float(noise.std()), 1e-6))
