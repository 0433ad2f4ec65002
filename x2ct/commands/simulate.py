"""``x2ct simulate --seed N [--count K] --out DIR [--png [FILE]]``: pseudo-patient CTs and label maps."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from x2ct.errors import InputError

#: Lung-and-mediastinum display window (level, width) in HU.
PREVIEW_WINDOW = (-400.0, 1600.0)
#: Limits of --count and --size (voxels per side: 512^3 float32 is 512 MiB per volume).
MAX_COUNT, MIN_SIZE, MAX_SIZE = 10000, 16, 512


def register(subparsers) -> None:
    parser = subparsers.add_parser("simulate", help="write pseudo-patient CTs (HU) and label maps from seeds")
    parser.add_argument("--seed", type=int, required=True, help="first seed (train 0-9999, validation "
                        "10000-10999, test 20000-20999)")
    parser.add_argument("--count", type=int, default=1, help="number of consecutive seeds (default 1)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--size", type=int, default=128, help="voxels per side (default 128, 2.5 mm)")
    parser.add_argument("--png", nargs="?", const="", default=None, metavar="FILE",
                        help="also write a preview (slices through the lungs and a MIP per seed); "
                             "default file DIR/preview.png")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(func=run)


def run(args) -> int:
    from x2ct.data import simulate
    from x2ct.data.protocol import get_protocol
    from x2ct.io import write_volume
    from x2ct.io.files import VOLUME_FORMATS
    from x2ct.io.outputs import check_target, claim, write_text
    from x2ct.render import save_png

    if not 1 <= args.count <= MAX_COUNT:
        raise InputError(f"--count must be 1 to {MAX_COUNT}, got {args.count}.")
    if args.seed < 0:
        raise InputError(f"--seed must be a non-negative integer, got {args.seed}.")
    if not MIN_SIZE <= args.size <= MAX_SIZE:
        raise InputError(f"--size must be {MIN_SIZE} to {MAX_SIZE} voxels, got {args.size}.")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; give a folder.")
    protocol = get_protocol("x2ct", args.size)
    seeds = range(args.seed, args.seed + args.count)
    targets = []
    for seed in seeds:
        stem = out / f"sim-{seed:05d}"
        targets += [check_target(f"{stem}.nii.gz", VOLUME_FORMATS, "the CT", overwrite=args.overwrite),
                    check_target(f"{stem}-labels.nii.gz", VOLUME_FORMATS, "the labels", overwrite=args.overwrite),
                    check_target(f"{stem}.json", None, "the parameters", overwrite=args.overwrite)]
    preview_target = None
    if args.png is not None:
        preview_target = check_target(Path(args.png) if args.png else out / "preview.png", {".png": "PNG"},
                                      "the preview", overwrite=args.overwrite)
        targets.append(preview_target)
    patients = []
    early = targets[:3] + ([preview_target] if preview_target else [])  # each later file is locked as written
    with claim(early):  # before the work: a read-only folder or a second writer fails now
        for seed in seeds:
            started = time.perf_counter()
            patient = simulate.pseudo_patient(seed, protocol)
            seconds = time.perf_counter() - started
            stem = out / f"sim-{seed:05d}"
            write_volume(patient.ct, f"{stem}.nii.gz", overwrite=args.overwrite)
            write_volume(patient.labels, f"{stem}-labels.nii.gz", overwrite=args.overwrite)
            write_text(f"{stem}.json", json.dumps(patient.parameters, indent=2), overwrite=args.overwrite)
            print(f"{stem}.nii.gz  {len(patient.parameters['nodules'])} nodule(s)  {seconds:.2f} s")
            patients.append(patient)
        if preview_target is not None:
            print(save_png(preview(patients), preview_target, overwrite=args.overwrite))
    return 0


def preview(patients: list, height: int = 200) -> Image.Image:
    """One row per ``PseudoPatient``: axial, coronal and sagittal slices and a coronal MIP.

    Slices pass through the first nodule (outlined in red) or the lungs'
    centre. Orientation as in ``x2ct.render``: axial seen from the feet,
    coronal from the front, sagittal from the patient's left.
    """
    from x2ct.data.simulate import NODULE_LABEL
    from x2ct.render import window

    rows = []
    for patient in patients:
        hu, labels = patient.ct.array, patient.labels.array
        nodule = labels == NODULE_LABEL
        k, j, i = _focus(patient)
        cuts = [(np.s_[k], "axial"), (np.s_[:, j, :], "coronal"), (np.s_[:, :, i], "sagittal")]
        panels = [_panel(window(hu[cut], *PREVIEW_WINDOW), nodule[cut], height, name) for cut, name in cuts]
        mip = hu.max(axis=1)
        panels.append(_panel(window(mip, 100.0, 1500.0), None, height, "coronal MIP"))
        rows.append(_labelled_row(panels, f"seed {patient.seed}"))
    canvas = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), (0, 0, 0))
    for n, row in enumerate(rows):
        canvas.paste(row, (0, n * rows[0].height))
    return canvas


def _focus(patient) -> tuple[int, ...]:
    """Voxel (k, j, i) at the first nodule's centre, else at the lungs' centre."""
    from x2ct.data.simulate import load_template

    volume = patient.ct
    if patient.parameters["nodules"]:
        offset = volume.direction.T @ (np.asarray(patient.parameters["nodules"][0]["centre_lps_mm"])
                                       - np.asarray(volume.origin))
        i, j, k = np.clip(np.round(offset / np.asarray(volume.spacing)).astype(int), 0, volume.shape[0] - 1)
        return int(k), int(j), int(i)
    lungs = np.isin(patient.labels.array, load_template(volume.shape[0]).lung_labels)
    return tuple(int(round(c)) for c in np.argwhere(lungs).mean(axis=0))


def _panel(gray: np.ndarray, outline: np.ndarray | None, height: int, label: str) -> Image.Image:
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    if outline is not None and outline.any():
        edge = outline & ~_eroded(outline)
        rgb[edge] = (255, 40, 40)
    image = Image.fromarray(rgb).resize((height, height), Image.Resampling.BILINEAR)
    _caption(image, (4, 2), label, (255, 220, 0))
    return image


def _caption(image: Image.Image, position: tuple[int, int], text: str, colour) -> None:
    """Text on a black box, readable on any background."""
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox(position, text, font=font)
    draw.rectangle((left - 2, top - 1, right + 2, bottom + 1), fill=(0, 0, 0))
    draw.text(position, text, fill=colour, font=font)


def _eroded(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_erosion(mask)


def _labelled_row(panels: list[Image.Image], label: str, gap: int = 3) -> Image.Image:
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    row = Image.new("RGB", (width, panels[0].height + gap), (0, 0, 0))
    for n, panel in enumerate(panels):
        row.paste(panel, (n * (panel.width + gap), 0))
    _caption(row, (4, panels[0].height - 14), label, (120, 220, 255))
    return row
