"""``x2ct render CT --anaglyph OUT.png | --turntable N --out FOLDER | --lateral OUT``: novel views of a CT."""

from __future__ import annotations

from pathlib import Path

from x2ct.errors import InputError
from x2ct.request import torch_device


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "render", help="stereo anaglyph, turntable or lateral view of a (reconstructed) CT",
        description="Novel views of a CT in HU, as DRRs in the X2CT geometry: a red-cyan anaglyph seen from the "
                    "input view (red = left eye), N frames around the patient's long axis (frame 0 = the PA "
                    "DRR), or the lateral view (the 90 degree frame, e.g. predicted from a PA reconstruction).")
    parser.add_argument("ct", help="CT volume in HU (NRRD, NIfTI, MHA, DICOM folder)")
    parser.add_argument("--anaglyph", metavar="OUT.png", help="write the red-cyan stereo anaglyph")
    parser.add_argument("--view", default="frontal", help="the anaglyph's viewing direction: frontal (PA), "
                                                          "lateral or a gantry angle in degrees (default frontal)")
    parser.add_argument("--stereo-angle", type=float, default=None,
                        help="degrees each eye turns from the view (default 3)")
    parser.add_argument("--turntable", type=int, metavar="N", help="write N frames around the patient into --out")
    parser.add_argument("--out", metavar="FOLDER", help="folder for the turntable frames")
    parser.add_argument("--lateral", metavar="OUT", help="write the lateral DRR (.nrrd/.mha float with geometry, "
                                                         "or .png)")
    parser.add_argument("--device", default="cpu", metavar="{auto,cpu,cuda,mps}",
                        help="where to compute the DRRs (default cpu; auto: CUDA when present)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(func=run)


def run(args) -> int:
    from x2ct import io, novelviews, render
    from x2ct.io.outputs import check_target
    from x2ct.io.xrays import XRAY_OUTPUTS

    if not (args.anaglyph or args.turntable or args.lateral):
        raise InputError("Nothing to render: give --anaglyph OUT.png, --turntable N --out FOLDER or --lateral OUT.")
    args.device = torch_device(args.device)
    if args.turntable is not None and not args.out:
        raise InputError("--turntable N needs --out FOLDER for its frames.")
    if args.out and args.turntable is None:
        raise InputError("--out is the turntable's folder; give --turntable N too.")
    targets = []
    if args.anaglyph:
        targets.append(check_target(args.anaglyph, {".png": "PNG"}, "anaglyph", inputs=[args.ct],
                                    overwrite=args.overwrite))
    frames = []
    if args.turntable is not None:
        angles = novelviews.turntable_angles(args.turntable)
        folder = Path(args.out)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"--out {folder} is a file; give a folder for the turntable frames.")
        frames = [check_target(folder / novelviews.FRAME_NAME.format(index=i, angle=a), {".png": "PNG"},
                               "turntable frame", overwrite=args.overwrite) for i, a in enumerate(angles)]
    if args.lateral:
        check_target(args.lateral, XRAY_OUTPUTS, "an X-ray", inputs=[args.ct], overwrite=args.overwrite)
    ct = io.read_ct(args.ct)
    half = novelviews.STEREO_HALF_ANGLE if args.stereo_angle is None else args.stereo_angle
    if args.anaglyph:
        image = novelviews.stereo_anaglyph(ct, args.view, half, device=args.device)
        print(render.save_png(image, targets[0], overwrite=args.overwrite),
              f" red = left eye at -{half:g} deg, cyan = right eye at +{half:g} deg from {args.view}")
    if frames:
        views = novelviews.turntable(ct, args.turntable, device=args.device)
        for path, image in zip(frames, novelviews.frames_to_images(views)):
            render.save_png(image, path, overwrite=args.overwrite)
        print(f"{folder}  {len(frames)} frames, {360.0 / len(frames):g} deg apart (frame 0 = PA)")
    if args.lateral:
        lateral = novelviews.view_at(ct, 90.0, device=args.device)
        print(io.write_xray(lateral, args.lateral, overwrite=args.overwrite), " lateral DRR (90 deg)")
    return 0
