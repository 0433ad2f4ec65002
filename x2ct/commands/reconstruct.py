"""``x2ct reconstruct --view FILE[:VIEW] ... --model ID --out CT.nrrd``: a CT in HU from X-rays."""

from __future__ import annotations

import json
from pathlib import Path

from x2ct.errors import InputError
from x2ct.image import normalise_view
from x2ct.request import DEVICES


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "reconstruct", help="reconstruct a CT volume from X-ray views",
        description="Reconstruct a CT in HU from one or more radiographs with a catalog model (see `x2ct catalog "
                    "list`) or a model folder. Research use only; not for diagnosis.")
    parser.add_argument("--view", action="append", required=True, metavar="FILE[:VIEW]",
                        help="an X-ray file, optionally with its view: frontal, lateral, ap or a gantry angle in "
                             "degrees (default: the file's view, else frontal); repeat for each view")
    parser.add_argument("--model", required=True, help="catalog model id (e.g. back-projection) or a model folder")
    parser.add_argument("--out", required=True, help="output CT: .nrrd/.nhdr/.mha/.mhd/.nii/.nii.gz")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: CUDA when present and the model fits its free memory, else MPS, else CPU")
    parser.add_argument("--fusion", action="store_true",
                        help="Beer-Lambert fusion: correct the volume so it reproduces the input views")
    parser.add_argument("--samples", type=int, default=1,
                        help="draws of a generative model (code-diffusion): writes their mean to --out and their "
                             "standard deviation (HU) next to it as *-std")
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed of a generative model's draws (default: the model's own for one draw, "
                             "0 for several)")
    parser.add_argument("--mip-png", metavar="PREFIX", default=None,
                        help="also write PREFIX.png: central slices and maximum intensity projections")
    parser.add_argument("--progress", choices=("text", "json"), default="text",
                        help="json: one JSON object per line on stdout, the last one {\"done\": true, ...}")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.set_defaults(func=run)


def parse_view(text: str) -> tuple[Path, object]:
    """'FILE', 'FILE:lateral' or 'FILE:90' -> (path, view or None). A suffix that is no view stays in the path."""
    head, sep, tail = text.rpartition(":")
    if sep and head and "/" not in tail and "\\" not in tail:
        try:
            return Path(head), normalise_view(tail)
        except InputError:
            if _is_number(tail):  # nan, inf, 1e309: meant as an angle, not as part of the file name
                raise InputError(f"--view {text}: the angle {tail!r} is not a finite number of degrees; give "
                                 "frontal, lateral, ap or an angle such as 90.") from None
            if Path(head).is_file() and not Path(text).exists():
                raise InputError(f"--view {text}: {tail!r} is not a view; give frontal, lateral, ap or a gantry "
                                 "angle in degrees such as 90.") from None
    return Path(text), None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_view(path: Path, view):
    """An XRay from a file and an optional view, refusing CT volumes."""
    from x2ct.image import Volume
    from x2ct.io import read_image, read_xray

    if Path(path).is_dir() or view is not None:  # a folder is refused; a view given overrides the file's header
        return read_xray(path, view)
    image = read_image(path)
    if isinstance(image, Volume):
        raise InputError(f"{path} is a CT volume ({'x'.join(map(str, image.shape[::-1]))} voxels), not an X-ray; "
                         "give radiographs with --view (2D images).")
    return image


def std_path(out: Path) -> Path:
    """CT.nrrd -> CT-std.nrrd (CT.nii.gz -> CT-std.nii.gz)."""
    from x2ct.io.files import suffix

    ext = suffix(out)
    return out.with_name(out.name[: len(out.name) - len(ext)] + "-std" + ext)


def run(args) -> int:
    from x2ct.io.files import VOLUME_FORMATS
    from x2ct.io.outputs import check_target, claim

    views = [parse_view(text) for text in args.view]
    model_folder = Path(args.model).expanduser()
    inputs = [path for path, _ in views] + ([model_folder] if model_folder.exists() else [])
    out = check_target(args.out, VOLUME_FORMATS, "the CT", inputs=inputs, overwrite=args.overwrite)
    targets = [out]
    if args.samples > 1:
        targets.append(check_target(std_path(out), VOLUME_FORMATS, "the spread volume", inputs=inputs,
                                    overwrite=args.overwrite))
    if args.mip_png:
        targets.append(check_target(f"{args.mip_png}.png", {".png": "PNG"}, "the preview", inputs=inputs,
                                    overwrite=args.overwrite))
    with claim(targets):  # before the work: a second writer of the same --out, or a read-only folder, fails now
        return _reconstruct(args, views, out)


def _reconstruct(args, views, out: Path) -> int:
    from x2ct import inference, io
    from x2ct.io.outputs import atomic_outputs

    def report(fraction: float, stage: str) -> None:
        if args.progress == "json":
            print(json.dumps({"progress": round(float(fraction), 4), "stage": stage}), flush=True)

    xrays = [read_view(path, view) for path, view in views]
    result = inference.reconstruct(xrays, args.model, device=args.device, fusion=args.fusion,
                                   samples=args.samples, seed=args.seed, progress=report)
    targets = {"output": out}
    if result.uncertainty is not None:
        targets["uncertainty"] = std_path(out)
    if args.mip_png:
        targets["mip_png"] = Path(f"{args.mip_png}.png").expanduser()
    with atomic_outputs(targets, overwrite=args.overwrite) as staged:  # all of them, or none
        io.write_volume(result.volume, staged["output"], overwrite=False)
        if result.uncertainty is not None:
            io.write_volume(result.uncertainty, staged["uncertainty"], overwrite=False)
        if args.mip_png:
            from x2ct import render

            image = render.ct_planes(result.volume, *render.CT_WINDOWS["soft-tissue"], title=result.model_id)
            render.save_png(image, staged["mip_png"], overwrite=False)
    written = {key: str(path) for key, path in targets.items()}
    if args.progress == "json":
        print(json.dumps({"done": True, **written, "model": result.model_id, "device": result.device,
                          "notes": result.notes}), flush=True)
    else:
        for note in result.notes:
            print(f"note: {note}")
        for value in written.values():
            print(value)
    return 0
