"""Film simulation: turn a clean DRR view into something that looks like a real radiograph.

DRRs are clean line integrals; real films are not. ``simulate`` draws, per
view and from a seeded ``numpy`` generator, what real films carry (ranges in
``FilmSettings``, documented in docs/film-simulation.md):

* geometry: patient rotation in the image plane, magnification from SID/SAD
  variation, field-of-view offsets (outside the field is air, 0);
* physics, in the transmitted-intensity domain ``I = exp(-A v)``: scatter (a
  smooth low-frequency additive term, a scatter-to-primary ratio times the
  blurred primary), detector blur (Gaussian) and quantum noise (standard
  deviation proportional to sqrt(I)); then back to ``-ln I``;
* the film's grey-scale curve: a window between random quantiles, a gamma,
  an S-shaped processing LUT (as CR/DX consoles apply) and unsharp masking;
* what is burned into the image: collimation borders (unexposed, white),
  black bands (padding of a cropped or digitised film) and markers and text
  (rectangles and rendered glyphs such as "L", "PA", a time).

Views are (S, S) in [0, 1], larger = more attenuation, as ``x2ct.physics``
makes them; the output is renormalised the same way (divided by its maximum,
8-bit levels). Lengths are given for a 128-pixel view and scale with S.
Every draw is returned with the image, so a figure or a test can say what
was applied.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from x2ct.errors import InputError

#: The effects, in the order they are applied.
EFFECTS = ("geometry", "scatter", "blur", "noise", "grey", "collimation", "bands", "markers")
#: Lengths in FilmSettings are pixels of a view this wide.
REFERENCE_PIXELS = 128
#: Texts a marker may carry (side markers, projection, positioning, a time stamp).
MARKER_TEXTS = ("L", "R", "PA", "AP", "ERECT", "SUPINE", "12:41", "09:05", "CR")


@dataclasses.dataclass(frozen=True)
class FilmSettings:
    """Ranges of the film effects (uniform unless said otherwise); ``effects`` lists those applied."""

    effects: tuple[str, ...] = EFFECTS
    rotation_deg: float = 5.0                        # in-plane rotation, +- (positive: counter-clockwise)
    magnification: tuple[float, float] = (0.9, 1.12)  # SID/SAD and patient-size variation after preparation
    offset: float = 0.06                             # field-of-view offset, +- fraction of the side, per axis
    attenuation: float = 4.6                         # A: a view value of 1 transmits exp(-A) = 1 %
    scatter_ratio: tuple[float, float] = (0.0, 0.8)  # scatter-to-primary ratio (0.2-0.5 with a grid, ~1 without)
    scatter_width: tuple[float, float] = (0.08, 0.2)  # Gaussian kernel sigma, fraction of the side
    blur_px: tuple[float, float] = (0.0, 1.2)        # detector / resampling blur sigma
    noise: tuple[float, float] = (0.0, 0.03)         # quantum noise: sd = noise * sqrt(I)
    window_low: tuple[float, float] = (0.0, 0.08)    # quantile mapped to 0
    window_high: tuple[float, float] = (0.97, 1.0)   # quantile mapped to 1
    gamma: tuple[float, float] = (0.7, 1.4)
    lut_p: float = 0.5                               # probability of an S-shaped LUT ...
    lut_centre: tuple[float, float] = (0.4, 0.6)
    lut_width: tuple[float, float] = (0.12, 0.3)
    unsharp_p: float = 0.5                           # probability of unsharp masking ...
    unsharp_amount: tuple[float, float] = (0.3, 1.5)
    unsharp_px: tuple[float, float] = (3.0, 10.0)    # its Gaussian sigma
    collimation_p: float = 0.3                       # per side: an unexposed (white) border ...
    collimation_width: tuple[float, float] = (0.02, 0.12)  # fraction of the side
    band_p: float = 0.3                              # one black band on a random side ...
    band_width: tuple[float, float] = (0.02, 0.10)
    markers: tuple[int, int] = (0, 3)                # burned-in markers, count inclusive
    marker_height: tuple[float, float] = (0.04, 0.08)  # fraction of the side

    def __post_init__(self) -> None:
        unknown = sorted(set(self.effects) - set(EFFECTS))
        if unknown:
            raise InputError(f"Unknown film effect {unknown[0]!r}; choose from: {', '.join(EFFECTS)}.")

    @classmethod
    def only(cls, *effects: str, **changes) -> "FilmSettings":
        """Settings applying just ``effects`` (to show or test one effect at a time)."""
        return cls(effects=tuple(effects), **changes)


DEFAULT_FILM = FilmSettings()


def simulate(view: np.ndarray, rng: np.random.Generator, settings: FilmSettings = DEFAULT_FILM
             ) -> tuple[np.ndarray, dict]:
    """A (S, S) view in [0, 1] -> (the same view as a film might show it, the draws)."""
    view = np.asarray(view, dtype=np.float64)
    if view.ndim != 2 or view.shape[0] != view.shape[1] or view.shape[0] < 8:
        raise InputError(f"The film simulation takes one square view of at least 8 pixels, got {view.shape}.")
    side = view.shape[0]
    px = side / REFERENCE_PIXELS
    on = set(settings.effects)
    drawn: dict = {}
    image = np.clip(view, 0.0, 1.0)
    if "geometry" in on:
        image = _geometry(image, rng, settings, drawn)
    intensity = np.exp(-settings.attenuation * image)
    if "scatter" in on:
        ratio = rng.uniform(*settings.scatter_ratio)
        width = rng.uniform(*settings.scatter_width) * side
        intensity = intensity + ratio * ndimage.gaussian_filter(intensity, width, mode="nearest")
        drawn.update(scatter_ratio=ratio, scatter_sigma_px=width)
    if "blur" in on:
        sigma = rng.uniform(*settings.blur_px) * px
        intensity = ndimage.gaussian_filter(intensity, sigma) if sigma > 0 else intensity
        drawn["blur_sigma_px"] = sigma
    if "noise" in on:
        level = rng.uniform(*settings.noise)
        intensity = intensity + level * np.sqrt(np.maximum(intensity, 0.0)) * rng.standard_normal(intensity.shape)
        drawn["noise"] = level
    image = -np.log(np.clip(intensity, np.exp(-2.0 * settings.attenuation), None))
    image = (image - image.min()) / max(float(np.ptp(image)), 1e-12)
    if "grey" in on:
        image = _grey_curve(image, rng, settings, px, drawn)
    if "collimation" in on:
        image = _collimation(image, rng, settings, drawn)
    if "bands" in on and rng.random() < settings.band_p:
        side_name = ("top", "bottom", "left", "right")[rng.integers(4)]
        width = max(1, int(round(rng.uniform(*settings.band_width) * side)))
        _edge(image, side_name, width)[...] = 0.0
        drawn["band"] = {"side": side_name, "pixels": width}
    if "markers" in on:
        image = _markers(image, rng, settings, drawn)
    peak = max(float(image.max()), 1e-12)
    return (np.floor(np.clip(image / peak, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32), drawn


def simulate_batch(views, probability: float, seed: int, settings: FilmSettings = DEFAULT_FILM, angles=None):
    """Views (..., S, S) (numpy or torch): each filmed with ``probability``, draws seeded by ``seed``.

    ``angles`` (broadcastable to the views' leading shape, degrees): each film is then prepared as a real
    film given as a picture is at inference (``x2ct.io.prepare``, pixel spacing unknown).
    """
    import torch

    rng = np.random.default_rng(seed)
    flat = np.asarray(views.detach().cpu() if torch.is_tensor(views) else views, dtype=np.float32)
    shape = flat.shape
    flat = flat.reshape(-1, *shape[-2:]).copy()
    view_angles = None if angles is None else np.broadcast_to(
        np.asarray(angles.detach().cpu() if torch.is_tensor(angles) else angles, dtype=np.float64),
        shape[:-2]).reshape(-1)
    for index in range(flat.shape[0]):
        if rng.random() < probability:
            flat[index] = simulate(flat[index], rng, settings)[0]
            if view_angles is not None:
                flat[index] = _prepared(flat[index], float(view_angles[index]))
    out = flat.reshape(shape)
    return torch.from_numpy(out).to(views) if torch.is_tensor(views) else out


def _prepared(film: np.ndarray, angle: float) -> np.ndarray:
    """A simulated film prepared as a picture (no spacing; a MONOCHROME2 film: no polarity guess)."""
    from x2ct.image import XRay
    from x2ct.io.prepare import prepare

    picture = XRay(film, (1.0, 1.0), angle, metadata={"source": "film simulation", "pixel_spacing_source":
                                                      "assumed", "PhotometricInterpretation": "MONOCHROME2"})
    return prepare(picture, film.shape[-1], "film").view


def _geometry(image: np.ndarray, rng, settings: FilmSettings, drawn: dict) -> np.ndarray:
    """Rotate about the centre, magnify, offset; air (0) comes in from outside."""
    side = image.shape[0]
    angle = np.radians(rng.uniform(-settings.rotation_deg, settings.rotation_deg))
    scale = rng.uniform(*settings.magnification)
    shift = rng.uniform(-settings.offset, settings.offset, size=2) * side
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = np.array([[cos, sin], [-sin, cos]]) / scale  # output (row, col) -> input, about the centre
    centre = np.full(2, (side - 1) / 2.0)
    offset = centre - matrix @ (centre + shift)
    drawn.update(rotation_deg=float(np.degrees(angle)), magnification=float(scale), offset_px=shift.tolist())
    return ndimage.affine_transform(image, matrix, offset, order=1, mode="constant", cval=0.0)


def _grey_curve(image: np.ndarray, rng, settings: FilmSettings, px: float, drawn: dict) -> np.ndarray:
    """Window between quantiles, gamma, maybe an S-shaped LUT, maybe unsharp masking."""
    low_q, high_q = rng.uniform(*settings.window_low), rng.uniform(*settings.window_high)
    low, high = np.quantile(image, [low_q, high_q])
    image = np.clip((image - low) / max(high - low, 1e-6), 0.0, 1.0)
    gamma = rng.uniform(*settings.gamma)
    image = image ** gamma
    drawn.update(window_quantiles=[float(low_q), float(high_q)], gamma=float(gamma))
    if rng.random() < settings.lut_p:
        centre, width = rng.uniform(*settings.lut_centre), rng.uniform(*settings.lut_width)
        curve = lambda x: 1.0 / (1.0 + np.exp(-(x - centre) / width))  # noqa: E731
        image = (curve(image) - curve(0.0)) / (curve(1.0) - curve(0.0))
        drawn["lut"] = {"centre": float(centre), "width": float(width)}
    if rng.random() < settings.unsharp_p:
        amount, sigma = rng.uniform(*settings.unsharp_amount), rng.uniform(*settings.unsharp_px) * px
        image = np.clip(image + amount * (image - ndimage.gaussian_filter(image, sigma)), 0.0, 1.0)
        drawn["unsharp"] = {"amount": float(amount), "sigma_px": float(sigma)}
    return image


def _edge(image: np.ndarray, side: str, width: int) -> np.ndarray:
    return {"top": image[:width], "bottom": image[-width:], "left": image[:, :width],
            "right": image[:, -width:]}[side]


def _collimation(image: np.ndarray, rng, settings: FilmSettings, drawn: dict) -> np.ndarray:
    """Unexposed borders: nearly white (the brightest grey of the film), each side with ``collimation_p``."""
    borders = {}
    for side_name in ("top", "bottom", "left", "right"):
        if rng.random() < settings.collimation_p:
            width = max(1, int(round(rng.uniform(*settings.collimation_width) * image.shape[0])))
            _edge(image, side_name, width)[...] = rng.uniform(0.9, 1.0)
            borders[side_name] = width
    if borders:
        drawn["collimation_px"] = borders
    return image


def _markers(image: np.ndarray, rng, settings: FilmSettings, drawn: dict) -> np.ndarray:
    """Burned-in white text or lead-marker rectangles near the edges."""
    from PIL import Image, ImageDraw, ImageFont

    side = image.shape[0]
    count = int(rng.integers(settings.markers[0], settings.markers[1] + 1))
    placed = []
    for _ in range(count):
        height = max(4, int(round(rng.uniform(*settings.marker_height) * side)))
        text = MARKER_TEXTS[rng.integers(len(MARKER_TEXTS))]
        boxed = bool(rng.random() < 0.3)
        scale = 4  # glyphs drawn at 4x, then shrunk with antialiasing
        font = ImageFont.load_default(size=height * scale)
        left, top, right, bottom = font.getbbox(text)
        canvas = Image.new("L", (right - left + 4 * scale, bottom - top + 4 * scale), 0)
        draw = ImageDraw.Draw(canvas)
        draw.text((2 * scale - left, 2 * scale - top), text, fill=255, font=font)
        if boxed:
            draw.rectangle([0, 0, canvas.width - 1, canvas.height - 1], outline=255, width=scale)
        glyph = np.asarray(canvas.resize((max(1, canvas.width // scale), max(1, canvas.height // scale)),
                                         Image.LANCZOS), dtype=np.float64) / 255.0
        glyph = glyph[:side, :side]
        row = int(rng.integers(0, side - glyph.shape[0] + 1))
        col = int(rng.choice([rng.integers(0, max(1, side // 4)), rng.integers(3 * side // 4, side)]))
        col = min(col, side - glyph.shape[1])
        target = image[row:row + glyph.shape[0], col:col + glyph.shape[1]]
        target[...] = np.maximum(target, glyph)
        placed.append({"text": text, "boxed": boxed, "row": row, "col": col, "height_px": height})
    drawn["markers"] = placed
    return image
