"""Pseudo-patients: random but plausible chest CTs made from the two real template CTs.

With no public paired data reachable here, the models train and are tested
on variations of the two real chest CTs we have (``PATIENTS``): seed ``s``
is made from ``PATIENTS[s % 2]``, so every split (and every run of
consecutive seeds) holds pseudo-patients of both.

* ``chest-ct``: contrast CT, neck to upper abdomen, with a 90-label organ map.
* ``chest-ct-2``: non-contrast CT from the lower neck to mid thorax (240 mm,
  no diaphragm) and no organ map. A full-height DRR of it alone would end in
  a flat cut across the lungs, which no radiograph shows, so its template is
  a documented chimera: the scan is placed at the top of the protocol cube
  (as ``chest-ct``'s apices are) and below its last slice the body continues
  with ``chest-ct``'s lower chest and upper abdomen, taken from the level
  whose lung-to-body area ratio best matches patient 2's last slice and
  scaled in-plane to patient 2's body outline, cross-faded over 10 mm; the
  pasted blood is de-enhanced (patient 2 is non-contrast). Patient 2's own
  labels are only its lungs (threshold -400 HU inside the body, split at
  the midline, given the ids of the right and left upper lobes); the pasted
  part keeps ``chest-ct``'s labels. The 292 mm field of view of the scan
  cuts the shoulders at the sides; that is left as it is.

Each seed gives, deterministically:

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
from x2ct.image import CANONICAL_DIRECTION, Volume, to_canonical, volume_from_sitk

#: Disjoint seed ranges: pseudo-patients for training, validation and testing.
TRAIN_SEEDS = range(0, 10000)
VALIDATION_SEEDS = range(10000, 11000)
TEST_SEEDS = range(20000, 21000)
SEED_RANGES = {"train": TRAIN_SEEDS, "validation": VALIDATION_SEEDS, "test": TEST_SEEDS}

#: The real CTs (``x2ct.sampledata`` cases) pseudo-patients are made from; seed % len picks one.
PATIENTS = ("chest-ct", "chest-ct-2")
#: Patient 2's lungs, by threshold inside the body; its last slices cross-fade into the pasted lower body.
LUNG_THRESHOLD_HU = -400.0
SEAM_MM = 10.0
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
    patients: tuple[str, ...] = PATIENTS             # templates; seed % len(patients) picks one


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
    patient: str = PATIENTS[0]  # the sampledata case it was made from


def pseudo_patient(seed: int, protocol: Protocol = X2CT, settings: Settings = DEFAULT_SETTINGS) -> PseudoPatient:
    """The pseudo-patient of ``seed`` on ``protocol``'s output grid (same seed, same patient)."""
    if int(seed) != seed or seed < 0:
        raise InputError(f"A simulator seed is a non-negative integer, got {seed!r}.")
    patient = patient_of(seed, settings)
    template = load_template(protocol.size, protocol.spacing_mm, protocol.crop_mm, patient)
    rng = np.random.default_rng(int(seed))
    n, spacing = template.grid.n, template.grid.spacing
    params: dict = {"seed": int(seed), "patient": patient}

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


def patient_of(seed: int, settings: Settings = DEFAULT_SETTINGS) -> str:
    """The real CT (sampledata case) the pseudo-patient of ``seed`` is made from."""
    return settings.patients[int(seed) % len(settings.patients)]


def load_template(size: int = 128, spacing_mm: float = 1.0, crop_mm: float = 320.0,
                  patient: str = PATIENTS[0]) -> Template:
    """The template of ``patient`` on a work cube for the protocol geometry (cached per process)."""
    if patient not in PATIENTS:
        raise InputError(f"Unknown simulator patient {patient!r}; choose one of: {', '.join(PATIENTS)}.")
    return _template(int(size), float(spacing_mm), float(crop_mm), patient)


@dataclasses.dataclass(frozen=True)
class _Source:
    """A template CT and labels on its work cube, before the lung weights and centres are derived."""

    hu: np.ndarray
    labels: np.ndarray
    grid: Grid
    margin: int


@functools.lru_cache(maxsize=4)
def _template(size: int, spacing_mm: float, crop_mm: float, patient: str) -> Template:
    protocol = Protocol(size=size, spacing_mm=spacing_mm, crop_mm=crop_mm)
    names, first = _first_patient(protocol)
    lung_labels = tuple(sorted(i for i, name in names.items() if name.startswith("lung_") and "lobe" in name))
    blood_labels = tuple(sorted(i for i, name in names.items() if any(s in name for s in BLOOD_STRUCTURES)))
    if len(lung_labels) != 5:
        raise InputError(f"The template's structure list names {len(lung_labels)} lung lobes, expected 5.")
    source = first if patient == PATIENTS[0] else _second_patient(protocol, first, names, blood_labels)
    hu, labels, grid, margin = source.hu, source.labels, source.grid, source.margin

    lung = np.isin(labels, lung_labels)
    lung_weight = ndimage.gaussian_filter(lung.astype(np.float32), sigma=6.0 / grid.spacing)
    lung_weight = np.clip(lung_weight * 2.0, 0.0, 1.0)  # 1 inside, fading over ~1 cm outside
    right = np.isin(labels, [i for i in lung_labels if "right" in names[i]])
    left = np.isin(labels, [i for i in lung_labels if "left" in names[i]])
    centres = np.array([np.argwhere(right).mean(axis=0), np.argwhere(left).mean(axis=0)])
    midline = float(centres[:, 2].mean())
    for array in (hu, labels, lung_weight):
        array.setflags(write=False)
    return Template(hu, labels, lung_weight, grid, margin, lung_labels, blood_labels, centres, midline, patient)


def _read_ct(path) -> Volume:
    import SimpleITK as sitk

    ct = volume_from_sitk(sitk.ReadImage(str(path)))
    return ct.with_array(np.maximum(ct.array.astype(np.float32), AIR_HU))  # -2048 outside the scan's field


def _work_grid(grid: Grid, margin: int) -> Grid:
    return Grid(grid.n + 2 * margin, grid.spacing,
                tuple(np.asarray(grid.origin) - CANONICAL_DIRECTION @ np.full(3, margin * grid.spacing)))


def _first_patient(protocol: Protocol) -> tuple[dict[int, str], _Source]:
    """Patient 1 (chest-ct) and its organ map on the work cube; the label names."""
    import SimpleITK as sitk

    from x2ct import sampledata

    files = sampledata.fetch(PATIENTS[0])
    ct = _read_ct(files["chest-ct.nii.gz"])
    label_map = volume_from_sitk(sitk.ReadImage(str(files["chest-ct-labels.nii.gz"])))
    grid = protocol.output_grid(ct)
    margin = int(np.ceil(0.15 * protocol.size))
    work = _work_grid(grid, margin)
    hu = resample(ct, work, AIR_HU).array.astype(np.float32)
    labels = resample(label_map, work, 0, interpolator="nearest").array.astype(np.uint8)
    return _structure_names(files["chest-ct-structures.csv"]), _Source(hu, labels, grid, margin)


def _second_patient(protocol: Protocol, first: _Source, names: dict[int, str], blood_labels) -> _Source:
    """Patient 2 (chest-ct-2) at the top of the cube, continued below its last slice by patient 1 (docstring)."""
    from x2ct import sampledata

    ct = _read_ct(sampledata.path(PATIENTS[1]))
    grid = protocol.output_grid(ct)
    extent = to_canonical(ct).spacing[2] * ct.shape[0]  # mm along the body axis
    top_pad = max(0.0, protocol.crop_mm - extent) / 2.0  # the protocol centres a short scan; move it up
    grid = Grid(grid.n, grid.spacing, tuple(np.asarray(grid.origin) + CANONICAL_DIRECTION @ [0.0, 0.0, top_pad]))
    work = _work_grid(grid, first.margin)
    hu = resample(ct, work, AIR_HU).array.astype(np.float32)
    coverage = resample(ct.with_array(np.ones(ct.shape, np.float32)), work, 0.0).array
    last = int(np.flatnonzero(coverage.max(axis=(1, 2)) > 0.999)[-1])  # last work row inside the scan
    labels = np.zeros(hu.shape, np.uint8)
    lungs = _threshold_lungs(hu)
    body_i = np.argwhere(_body(hu[last]))[:, 1].mean()
    upper = {side: next(i for i, name in names.items() if name == f"lung_upper_lobe_{side}")
             for side in ("right", "left")}
    columns = np.arange(hu.shape[2])[None, None, :]
    labels[lungs & (columns < body_i)] = upper["right"]  # smaller i is the patient's right
    labels[lungs & (columns >= body_i)] = upper["left"]

    seam = max(1, int(round(SEAM_MM / grid.spacing)))
    match = _matching_level(first.hu, hu, last)
    pasted_hu, pasted_labels = _pasted_lower_body(first, match, hu[last], last, seam)
    blood = np.isin(pasted_labels, blood_labels) & (pasted_hu > 100.0)
    pasted_hu[blood] = 40.0  # patient 2 is a non-contrast scan
    weight = np.clip((np.arange(last - seam, hu.shape[0]) - (last - seam)) / (seam + 1.0), 0.0, 1.0)
    weight = weight.astype(np.float32)[:, None, None]
    hu[last - seam:] = (1.0 - weight) * hu[last - seam:] + weight * pasted_hu
    labels[last - seam:] = np.where(weight >= 0.5, pasted_labels, labels[last - seam:])
    return _Source(hu, labels, grid, first.margin)


def _body(plane: np.ndarray) -> np.ndarray:
    """The body in one axial plane: the largest region above -500 HU, holes (lungs) filled."""
    regions, count = ndimage.label(plane > -500.0)
    if count == 0:
        return np.zeros(plane.shape, bool)
    largest = 1 + int(np.argmax(ndimage.sum_labels(np.ones(plane.shape), regions, range(1, count + 1))))
    return ndimage.binary_fill_holes(regions == largest)


def _threshold_lungs(hu: np.ndarray) -> np.ndarray:
    """Air inside the body, slice by slice, without specks (components under 1 % of the largest dropped)."""
    lungs = np.stack([_body(plane) & (plane < LUNG_THRESHOLD_HU) for plane in hu])
    lungs = ndimage.binary_opening(lungs)
    regions, count = ndimage.label(lungs)
    if count == 0:
        return lungs
    sizes = ndimage.sum_labels(np.ones(hu.shape), regions, range(1, count + 1))
    return np.isin(regions, 1 + np.flatnonzero(sizes >= 0.01 * sizes.max()))


def _lung_areas(hu: np.ndarray) -> np.ndarray:
    """Lung area (voxels) of every axial row: air below the lung threshold inside the body."""
    return np.array([(_body(plane) & (plane < LUNG_THRESHOLD_HU)).sum() for plane in hu], dtype=np.float64)


def _matching_level(first_hu: np.ndarray, second_hu: np.ndarray, last: int) -> int:
    """Patient 1's row at the same stage of the lungs as patient 2's row ``last``.

    Patient 2's lungs are past their widest when its scan stops, so the match
    is the row below patient 1's widest lungs whose lung area, as a fraction
    of its widest, is closest to that of patient 2's last row.
    """
    first, second = _lung_areas(first_hu), _lung_areas(second_hu[:last + 1])
    widest = int(np.argmax(first))
    fraction = second[-1] / max(second.max(), 1.0)
    return widest + int(np.argmin(np.abs(first[widest:] / max(first.max(), 1.0) - fraction)))


def _pasted_lower_body(first: _Source, match: int, plane: np.ndarray, last: int, seam: int):
    """Patient 1's rows placed so that row ``match`` lands on row ``last``, scaled to ``plane``'s body outline.

    Returns the rows from ``last - seam`` to the bottom of the work cube (HU and labels).
    """
    def box(mask):
        rows, cols = np.nonzero(mask)
        return np.array([rows.mean(), cols.mean()]), np.array([np.ptp(rows) + 1.0, np.ptp(cols) + 1.0])

    (centre_2, size_2), (centre_1, size_1) = box(_body(plane)), box(_body(first.hu[match]))
    scale = size_1 / size_2
    source_k = match + np.arange(-seam, first.hu.shape[0] - last)
    j = centre_1[0] + (np.arange(plane.shape[0]) - centre_2[0]) * scale[0]
    i = centre_1[1] + (np.arange(plane.shape[1]) - centre_2[1]) * scale[1]
    coords = np.stack(np.meshgrid(source_k.astype(np.float32), j.astype(np.float32), i.astype(np.float32),
                                  indexing="ij"))
    pasted_hu = _sample(first.hu, coords, "bilinear", AIR_HU)
    pasted_labels = _sample(first.labels.astype(np.float32), coords, "nearest", 0).astype(np.uint8)
    return pasted_hu, pasted_labels


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
