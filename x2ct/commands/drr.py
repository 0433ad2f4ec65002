"""``x2ct drr CT --view V --out FILE``: a simulated radiograph (DRR) of a CT, with its geometry."""

from __future__ import annotations

import dataclasses
import math
import time

from x2ct.errors import InputError
from x2ct.image import normalise_view
from x2ct.request import torch_device

#: Largest DRR side in pixels: 4096^2 rays already take minutes and gigabytes on a CPU.
MAX_SIZE = 4096


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "drr", help="render a digitally reconstructed radiograph of a CT",
        description="Render a DRR of a CT in HU. Default geometry: the X2CT benchmark's (cone beam, SAD 541 mm, "
                    "SID 949 mm, 500x500 mm detector of 320x320 pixels, isocentre at the volume centre).")
    parser.add_argument("ct", help="CT volume in HU (DICOM folder, NIfTI, NRRD, MHA)")
    parser.add_argument("--view", default="frontal",
                        help="frontal (PA), ap, lateral (left lateral) or a gantry angle in degrees (0 = PA)")
    parser.add_argument("--out", required=True, help="output X-ray: .nrrd/.nhdr/.mha/.mhd (float) or .png (16 bit)")
    parser.add_argument("--mode", choices=("beer-lambert", "x2ct"), default="beer-lambert",
                        help="beer-lambert: line integral of attenuation (-ln I/I0); "
                             "x2ct: the X2CT benchmark's normalised DRR in [0, 1]")
    parser.add_argument("--size", type=int, default=None,
                        help="image side in pixels (default: 320 detector pixels; x2ct mode: 128 after resizing)")
    parser.add_argument("--sad", type=float, default=None, help="source to isocentre distance in mm (default 541)")
    parser.add_argument("--sid", type=float, default=None, help="source to detector distance in mm (default 949)")
    parser.add_argument("--detector-mm", type=float, default=None,
                        help="side of the square detector in mm (default 500)")
    parser.add_argument("--beam", choices=("cone", "parallel"), default="cone")
    parser.add_argument("--device", default="cpu", metavar="{auto,cpu,cuda,mps}",
                        help="where to compute the DRRs (default cpu; auto: CUDA when present)")
    parser.add_argument("--png", default=None, metavar="PREVIEW.png", help="also write a labelled preview")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(func=run)


def run(args) -> int:
    from x2ct import physics
    from x2ct.io.outputs import check_target, claim
    from x2ct.io.xrays import XRAY_OUTPUTS

    view = normalise_view(args.view)
    args.device = torch_device(args.device)
    if args.size is not None and not 2 <= args.size <= MAX_SIZE:
        raise InputError(f"--size must be 2 to {MAX_SIZE} pixels, got {args.size}.")
    for name in ("sad", "sid", "detector_mm"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise InputError(f"--{name.replace('_', '-')} must be a positive number of mm, got {value}.")
    changes = {"beam": args.beam}
    if args.size is not None and args.mode == "beer-lambert":
        changes["pixels"] = (args.size, args.size)
    for name, value in (("sad", args.sad), ("sid", args.sid)):
        if value is not None:
            changes[name] = value
    if args.detector_mm is not None:
        changes["detector_mm"] = (args.detector_mm, args.detector_mm)
    geometry = dataclasses.replace(physics.X2CT_GEOMETRY, **changes)
    targets = [check_target(args.out, XRAY_OUTPUTS, "the DRR", inputs=[args.ct], overwrite=args.overwrite)]
    if args.png:
        targets.append(check_target(args.png, {".png": "PNG"}, "the preview", inputs=[args.ct, args.out],
                                    overwrite=args.overwrite))
    with claim(targets):  # before the work: a read-only folder or a second writer fails now
        return _render(args, view, geometry)


def _render(args, view, geometry) -> int:
    from x2ct import io, physics

    ct = io.read_ct(args.ct)
    started = time.perf_counter()
    xray = physics.drr(ct, view, geometry, mode=args.mode, device=args.device,
                       x2ct_size=args.size or physics.X2CT_SIZE)
    seconds = time.perf_counter() - started
    target = io.write_xray(xray, args.out, overwrite=args.overwrite)
    rows, cols = xray.shape
    print(f"{target}  {args.mode} {xray.view} view, {rows}x{cols} px of {xray.pixel_spacing[0]:.3f} mm, "
          f"{geometry.beam} beam, {seconds:.2f} s")
    if args.png:
        from x2ct import render

        lines = [f"DRR ({args.mode}) of {ct.shape[2]}x{ct.shape[1]}x{ct.shape[0]} CT"]
        print(render.save_png(render.xray_panel(xray, lines=lines), args.png, overwrite=args.overwrite))
    return 0
