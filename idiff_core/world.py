"""The embedded face world: procedurally rendered, identity-structured faces with known landmarks.

It stands in for FFHQ, a labelled training set and LFW when nothing may be downloaded. An identity is
a vector of stable face parameters (shape, skin, eyes, brows, nose, mouth, hair, ears, marks); each
image adds nuisance (pose, scale, shift, expression, hairdo, lighting, background, blur, noise). Faces are
shaded from a height field so that MTCNN detects them, and every identity and image is drawn from
its own seed (`derive_seed(seed, set, identity[, image])`), so any one of them can be rendered alone.
"""

from __future__ import annotations

import functools
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from idiff_core.config import WORLD_SET_SIZE_KEYS, world_set_size_keys
from idiff_core.io import IMAGE_EXTENSIONS, atomic_path, write_png
from idiff_core.progress import progress
from idiff_core.runtime import derive_seed

KINDS = tuple(WORLD_SET_SIZE_KEYS)  # ("ffhq", "labelled", "lfw")
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass(frozen=True)
class WorldSettings:
    """Sizes and strengths of the embedded world (config subtree `world`). Built from
    `world_set_config(world, kind)`, it holds one set's size only; the other sets' are None."""

    seed: int
    image_size: int
    nuisance_strength: float
    ffhq_identities: int | None = None
    labelled_identities: int | None = None
    labelled_images_per_identity: int | None = None
    lfw_identities: int | None = None
    lfw_images_per_identity: int | None = None
    lfw_pairs_per_fold: int | None = None

    def __post_init__(self) -> None:
        if self.image_size < 64:
            raise ValueError(f"world.image_size must be >= 64 (faces need ~30 px between the eyes), got {self.image_size}")
        if self.nuisance_strength < 0:
            raise ValueError(f"world.nuisance_strength must be >= 0, got {self.nuisance_strength}")

    def layout(self, kind: str) -> tuple[int, int]:
        """(identities, images per identity) of one set."""
        keys = world_set_size_keys(kind)
        sizes = (getattr(self, keys[0]), getattr(self, keys[1]) if len(keys) > 1 else 1)  # ffhq: one image each
        if None in sizes:
            raise ValueError(f"these world settings hold no size for set {kind!r} (missing {keys})")
        return sizes


# Identity parameters, each uniform in [low, high]; face units: half the nominal inter-ocular distance.
IDENTITY_RANGES: dict[str, tuple[float, float]] = {
    "face_width": (1.85, 2.35), "face_length": (3.0, 3.5), "jaw_taper": (0.1, 0.55), "chin_drop": (-0.15, 0.2),
    "cheek_fullness": (0.0, 0.35), "skin_tone": (0.0, 0.6), "skin_warmth": (-1.0, 1.0), "blush": (0.0, 1.0),
    "eye_spacing": (0.96, 1.04), "eye_width": (0.4, 0.56), "eye_open": (0.75, 1.3), "eye_tilt": (-0.12, 0.15),
    "eye_height": (-0.1, 0.1), "iris_size": (0.16, 0.23), "iris_hue": (0.0, 1.0), "iris_dark": (0.0, 1.0),
    "brow_height": (-0.72, -0.48), "brow_arch": (0.0, 0.22), "brow_thick": (0.07, 0.18), "brow_length": (0.85, 1.25),
    "brow_tilt": (-0.15, 0.15), "brow_dark": (0.3, 1.0), "nose_length": (1.0, 1.1), "nose_width": (0.75, 1.3),
    "nose_tip": (0.8, 1.3), "nose_bridge": (0.25, 0.6), "mouth_width": (0.78, 0.88), "mouth_height": (2.2, 2.34),
    "upper_lip": (0.06, 0.16), "lower_lip": (0.08, 0.2), "lip_red": (0.0, 1.0), "hair_dark": (0.0, 1.0),
    "hair_red": (0.0, 1.0), "hair_grey": (0.0, 1.0), "hair_volume": (0.03, 0.4), "hair_length": (-0.5, 5.5),
    "hairline": (1.4, 2.4), "fringe": (0.0, 1.0), "parting": (-1.0, 1.0), "hair_curl": (0.0, 1.0),
    "ear_size": (0.8, 1.2), "ear_height": (0.25, 0.65), "freckles": (0.0, 1.0), "freckle_phase": (0.0, 6.283),
    "moles": (0.0, 3.0), "mole_u": (-1.6, 1.6), "mole_v": (-1.2, 2.8), "mole_u2": (-1.6, 1.6), "mole_v2": (-1.2, 2.8),
}


def sample_identity(seed: int, kind: str, index: int) -> dict[str, float]:
    """The parameter vector of identity `index` of set `kind` (sets never share an identity seed)."""
    rng = np.random.default_rng(derive_seed(seed, "world", kind, "identity", index))
    ident = {name: float(rng.uniform(lo, hi)) for name, (lo, hi) in IDENTITY_RANGES.items()}
    ident["freckles"] = max(0.0, ident["freckles"] * 2.0 - 1.0)  # half the people have none
    ident["moles"] = float(math.floor(max(0.0, ident["moles"] - 1.0)))  # 0, 1 or 2 moles
    if rng.uniform() < 0.1:  # bald or shaved: hair starts high and lies flat
        ident.update(hairline=3.0, hair_volume=0.0, fringe=0.0, hair_length=-1.0)
    return ident


def sample_nuisance(seed: int, kind: str, index: int, image: int, strength: float) -> dict[str, float | np.ndarray]:
    """Per-image nuisance of image `image` of identity `index`; `strength` scales every nuisance range."""
    rng = np.random.default_rng(derive_seed(seed, "world", kind, "image", index, image))
    s = strength
    elevation = rng.uniform(0.15, 0.75)  # radians above the view direction
    azimuth = rng.uniform(-math.pi, math.pi)
    light = np.array([math.cos(elevation) * math.cos(azimuth) * min(1.0, s),
                      math.cos(elevation) * math.sin(azimuth) * min(1.0, s), 1.0])
    falloff = rng.uniform(0.0, 0.5) * s  # light fading across the scene, in the light's direction
    return {
        "roll": rng.normal(0.0, 0.05 * s), "yaw": rng.uniform(-0.1, 0.1) * s, "pitch": rng.uniform(-0.05, 0.05) * s,
        "scale": math.exp(rng.uniform(-0.04, 0.12) * s), "shift_x": rng.uniform(-0.04, 0.04) * s,
        "shift_y": rng.uniform(-0.04, 0.04) * s, "gaze": rng.uniform(-0.08, 0.08) * s,
        "smile": rng.uniform(0.0, 1.0) ** 2 * s, "mouth_open": max(0.0, rng.uniform(-0.6, 1.0)) * s,
        "brow_raise": rng.uniform(-0.3, 1.0) * s, "squint": max(0.0, rng.uniform(-0.4, 0.6)) * s,
        "light": light / np.linalg.norm(light), "ambient": 1.0 - (1.0 - rng.uniform(0.5, 0.75)) * min(1.0, s),
        "falloff": falloff * np.array([math.cos(azimuth), math.sin(azimuth)]),
        "intensity": math.exp(rng.uniform(-0.5, 0.35) * s),
        "tint": np.exp(rng.normal(0.0, 0.06 * s, 3)), "background": _muted(rng),
        "bg_texture": rng.uniform(0.1, 0.8) * s, "bg_angle": rng.uniform(0, 2 * math.pi),
        "bg_coarse": rng.uniform(-1.0, 1.0, (6, 6, 3)).astype(np.float32), "noise_offset": rng.integers(0, 2**16, 2),
        "clothes": rng.uniform(0.05, 0.9, 3), "hairdo": rng.normal(0.0, 1.0, 5) * np.array([0.4, 0.7, 0.5, 0.08, 0.9]) * s,
        "blur": 0.2 + rng.uniform(0.0, 0.15) * s, "noise": (0.003 + rng.uniform(0.0, 0.008)) * s,
    }


def _muted(rng: np.random.Generator) -> np.ndarray:
    """Two background colours: a random grey level tinted by a random colour (photos are rarely neon)."""
    grey = rng.uniform(0.1, 0.9, (2, 1))
    return grey + rng.uniform(0.1, 0.6) * (rng.uniform(0.05, 0.95, (2, 3)) - grey)


@functools.lru_cache(maxsize=4)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return xs, ys


def _rgb(*values: float) -> np.ndarray:
    """A colour shaped (3, 1, 1): images are channel-first, which keeps numpy's inner loops long."""
    return np.array(values, dtype=np.float32).reshape(3, 1, 1)


def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Soft inside-mask of a signed distance `d` (negative inside), linear over `width`."""
    return np.clip(0.5 - d * np.float32(1.0 / width), 0.0, 1.0)


def _gauss(x: np.ndarray, y: np.ndarray, sx: float, sy: float) -> np.ndarray:
    return np.exp(np.float32(-0.5) * ((x * np.float32(1 / sx)) ** 2 + (y * np.float32(1 / sy)) ** 2))


def _blend(img: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    """Paint `colour` ((3,1,1) or a 3xHxW array) over the 3xHxW `img` with opacity `mask`, in place."""
    img -= mask * (img - colour)


def _skin_colour(ident: dict[str, float]) -> np.ndarray:
    """Skin albedo along a light-to-dark line, kept bright enough to stay detectable."""
    t = ident["skin_tone"]
    light, dark = np.array([0.93, 0.76, 0.64]), np.array([0.42, 0.27, 0.18])
    warmth = ident["skin_warmth"] * np.array([0.03, 0.0, -0.04])
    return _rgb(*np.clip(light * (1 - t) + dark * t + warmth, 0.0, 1.0))


def _hair_colour(ident: dict[str, float], skin: np.ndarray) -> np.ndarray:
    """Hair albedo from darkness, redness and greyness, pushed away from the skin's brightness."""
    base = np.array([0.55, 0.42, 0.25]) * (1.0 - 0.9 * ident["hair_dark"]) + 0.02
    base = base * (1 + 0.6 * ident["hair_red"] * np.array([0.6, -0.1, -0.4]))
    grey = max(0.0, ident["hair_grey"] - 0.75) * 4.0
    hair = base * (1 - grey) + grey * np.array([0.7, 0.7, 0.72])
    if abs(hair.mean() - skin.mean()) < 0.25:  # hair close to skin hides the face outline
        hair = hair * 0.45 if skin.mean() > 0.35 else np.minimum(hair * 1.8 + 0.2, 0.95)
    return _rgb(*np.clip(hair, 0.0, 1.0))


_IRIS = [_rgb(0.35, 0.2, 0.08), _rgb(0.3, 0.45, 0.65), _rgb(0.35, 0.5, 0.3), _rgb(0.45, 0.45, 0.45), _rgb(0.5, 0.35, 0.15)]


@dataclass
class _Canvas:
    """Face-unit coordinates (u right, v down, origin between the eyes) of a block of pixels, with the
    albedo and height-field arrays of that block (views, so drawing on a window draws on the image)."""

    u: np.ndarray
    v: np.ndarray
    img: np.ndarray
    height: np.ndarray
    fg: np.ndarray  # opacity of the person over the background
    aa: float  # anti-aliasing width in face units

    def window(self, g: dict, u0: float, u1: float, v0: float, v1: float) -> "_Canvas":
        """The pixel block that covers the face-unit box [u0,u1]x[v0,v1] (any roll)."""
        corners = [_to_pixels(g, pu, pv) for pu in (u0, u1) for pv in (v0, v1)]
        xs, ys = zip(*corners)
        size = self.u.shape[0]
        c0, c1 = max(0, int(min(xs))), min(size, int(math.ceil(max(xs))) + 1)
        r0, r1 = max(0, int(min(ys))), min(size, int(math.ceil(max(ys))) + 1)
        block = (slice(r0, max(r0, r1)), slice(c0, max(c0, c1)))
        return _Canvas(self.u[block], self.v[block], self.img[(slice(None), *block)], self.height[block],
                       self.fg[block], self.aa)


def _to_pixels(g: dict, pu: float, pv: float) -> tuple[float, float]:
    return (g["cx"] + g["px"] * (g["cr"] * pu - g["sr"] * pv), g["cy"] + g["px"] * (g["sr"] * pu + g["cr"] * pv))


def _geometry(ident: dict[str, float], nuis: dict, size: int) -> dict[str, float]:
    """Where the face sits in the image and where its landmark-bearing features are (face units).

    Yaw moves a feature sideways by its depth in front of the head centre; pitch moves it vertically.
    """
    yaw, pitch, smile, gape = nuis["yaw"], nuis["pitch"], nuis["smile"], nuis["mouth_open"]
    return {
        "px": 0.12 * size * nuis["scale"], "cx": size * (0.5 + nuis["shift_x"]), "cy": size * (0.46 + nuis["shift_y"]),
        "cr": math.cos(nuis["roll"]), "sr": math.sin(nuis["roll"]), "yaw": yaw, "pitch": pitch,
        "eye_u": yaw * 1.0, "eye_v": ident["eye_height"] + pitch, "es": ident["eye_spacing"],
        "brow_v": ident["brow_height"] - 0.12 * nuis["brow_raise"] + ident["eye_height"] + pitch,
        "tip_v": 1.05 * ident["nose_length"] + 1.6 * pitch, "nose_u": 1.8 * yaw,
        "mouth_w": ident["mouth_width"] * (1.0 + 0.12 * smile - 0.08 * gape),
        "mouth_v": ident["mouth_height"] + 1.2 * pitch, "mouth_u": 1.2 * yaw, "corner_lift": 0.13 * smile,
        "head_u": -0.25 * yaw,
    }


def render(ident: dict[str, float], nuis: dict, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw one face: (HxWx3 uint8 RGB image, 5x2 float32 landmarks in pixels, MTCNN order)."""
    ident = _styled(ident, nuis["hairdo"])
    g = _geometry(ident, nuis, size)
    xs, ys = _pixel_grid(size)
    dx, dy = xs - np.float32(g["cx"]), ys - np.float32(g["cy"])
    inv = 1.0 / g["px"]
    u = dx * np.float32(g["cr"] * inv) + dy * np.float32(g["sr"] * inv)
    v = dy * np.float32(g["cr"] * inv) - dx * np.float32(g["sr"] * inv)
    img = np.empty((3, size, size), np.float32)
    img[:] = nuis["clothes"].astype(np.float32).reshape(3, 1, 1)
    canvas = _Canvas(u, v, img, np.zeros((size, size), np.float32), np.zeros((size, size), np.float32), 1.2 * inv)
    skin = _skin_colour(ident)
    hair = _hair_colour(ident, skin)

    _draw_head(canvas, g, ident, skin, hair)
    inner = canvas.window(g, -2.4, 2.4, -1.6, 3.3)
    _draw_marks(inner, ident, skin)
    _draw_eyes(inner, g, ident, nuis)
    _draw_brows(inner, g, ident, hair)
    _draw_nose(inner, g, ident, skin)
    _draw_mouth(inner, g, ident, nuis, skin)
    _draw_front_hair(canvas.window(g, -3.2, 3.2, -4.5, 1.6), g, ident, hair, skin)

    # Lambert shading of the height field (normals from its gradient), ambient light, colour tint
    gx, gy = _slopes(canvas.height, g["px"])
    lx, ly, lz = (np.float32(c) for c in nuis["light"])
    nz = 1.0 / np.sqrt(1.0 + gx * gx + gy * gy)
    lambert = np.clip((lz - gx * lx - gy * ly) * nz, 0.0, None)
    ambient = np.float32(nuis["ambient"])
    shade = (ambient + (1.0 - ambient) * lambert) * np.float32(nuis["intensity"])
    fx, fy = nuis["falloff"] / size
    shade *= np.clip(1.0 + np.float32(fx) * (xs - np.float32(size / 2)) + np.float32(fy) * (ys - np.float32(size / 2)), 0.1, None)
    img *= shade * nuis["tint"].astype(np.float32).reshape(3, 1, 1)

    out = _background(nuis, size, xs, ys)
    _blend(out, canvas.fg, img)
    sigma = nuis["blur"] * size / 128
    for plane in out:
        cv2.GaussianBlur(plane, (0, 0), sigmaX=sigma, sigmaY=sigma, dst=plane)
    oy, ox = nuis["noise_offset"] % size
    out += _noise_bank(size)[:, oy:oy + size, ox:ox + size] * np.float32(nuis["noise"])
    image = np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image.transpose(1, 2, 0)), _landmarks(g)


def _styled(ident: dict[str, float], hairdo: np.ndarray) -> dict[str, float]:
    """The identity with today's hairdo: hairline, parting, fringe, volume and length change from photo
    to photo, so raw pixels cannot match people by their hair while the landmarks stay untouched."""
    line, parting, fringe, volume, length = (float(x) for x in hairdo)
    has_hair = ident["hair_volume"] > 0
    return {**ident, "hairline": ident["hairline"] + line,
            "hair_volume": float(np.clip(ident["hair_volume"] + volume, 0.02, 0.5)) if has_hair else 0.0,
            "hair_length": ident["hair_length"] + length if has_hair else ident["hair_length"],
            "parting": float(np.clip(ident["parting"] + parting, -1.0, 1.0)),
            "fringe": float(np.clip(ident["fringe"] + fringe, 0.0, 1.0)) if has_hair else 0.0}


def _slopes(height: np.ndarray, px: float) -> tuple[np.ndarray, np.ndarray]:
    """Central-difference slopes of a height field in face units, per pixel (x, y)."""
    gx, gy = np.zeros_like(height), np.zeros_like(height)
    half = np.float32(px / 2)
    np.multiply(height[:, 2:] - height[:, :-2], half, out=gx[:, 1:-1])
    np.multiply(height[2:] - height[:-2], half, out=gy[1:-1])
    return gx, gy


@functools.lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
    """Fixed unit Gaussian noise, twice the image size; each image reads it at its own random offset
    (drawing fresh normals per pixel would cost more than the whole face)."""
    return np.random.default_rng(size).standard_normal((3, 2 * size, 2 * size), dtype=np.float32)


def _landmarks(g: dict) -> np.ndarray:
    """The five true landmarks in pixels: eye centres (pupils), nose tip, mouth corners."""
    corner_v = g["mouth_v"] - g["corner_lift"]
    points = [(g["eye_u"] - g["es"], g["eye_v"]), (g["eye_u"] + g["es"], g["eye_v"]), (g["nose_u"], g["tip_v"]),
              (g["mouth_u"] - g["mouth_w"], corner_v), (g["mouth_u"] + g["mouth_w"], corner_v)]
    return np.array([_to_pixels(g, pu, pv) for pu, pv in points], dtype=np.float32)


def _draw_head(c: _Canvas, g: dict, ident: dict[str, float], skin: np.ndarray, hair: np.ndarray) -> None:
    """Hair behind the head, the head itself (skin and a rounded height field), ears, neck and clothes."""
    u, v, aa = c.u, c.v, c.aa
    a, b, vc = ident["face_width"], ident["face_length"], _head_centre(ident)
    uu = u - np.float32(g["head_u"])
    vn = (v - np.float32(vc)) * np.float32(1 / (b + ident["chin_drop"] / 2))
    jaw = 1.0 - np.float32(1.4 * ident["jaw_taper"]) * np.clip(vn - 0.15, 0.0, None) ** 2
    cheeks = 1.0 + np.float32(0.12 * ident["cheek_fullness"]) * np.exp(-((vn - 0.2) * 4) ** 2)
    uh = uu / (np.float32(a) * cheeks * jaw)
    r2 = uh * uh + vn * vn
    head = _ramp(np.sqrt(r2) - 1.0, aa * 1.5 / a)
    c.height[:] = 2.2 * np.sqrt(np.clip(1.0 - r2, 0.0, None) + 0.01) * (head > 0)

    vol = ident["hair_volume"]
    if vol > 0:
        hv = (v - np.float32(vc - 0.15 * vol)) * np.float32(1 / (b * (1 + 0.5 * vol)))
        hu = uu * np.float32(1 / (a * (1.05 + vol)))
        hair_r2 = hu * hu + hv * hv
        length = _ramp(v - ident["hair_length"], 0.3)
        skull = _ramp(np.sqrt(hair_r2) - 1.0, aa * 2 / a) * length * (hv < 0.2 + 0.3 * (ident["hair_length"] > 1.5))
        back_hair = np.maximum(skull, _ramp(np.abs(hu) - 1.0, 0.05) * length * (v > 0))
        _blend(c.img, back_hair, hair * _strands(ident, uu * np.float32(1 / a), v))
        c.fg[:] = back_hair
        hair_height = 2.4 * np.sqrt(np.clip(1.0 - hair_r2, 0.0, None) + 0.01) * back_hair * (head == 0)
        np.maximum(c.height, hair_height, out=c.height)
    low = c.window(g, -8.0, 8.0, 1.5, 12.0)
    lu = low.u - np.float32(g["head_u"])
    neck_w = 0.55 * a
    neck = _ramp(np.abs(lu) - neck_w, aa) * (1 - low.fg)  # in front of the shoulders, behind long hair
    clothes = _ramp(3.9 + 0.1 * lu ** 2 - low.v, aa)
    neck_h = 1.3 * np.sqrt(np.clip(1.0 - (lu * np.float32(1 / neck_w)) ** 2, 0.0, None)) * neck
    np.maximum(low.height, neck_h, out=low.height)
    _blend(low.img, neck * (1 - clothes), skin * 0.85)
    np.maximum(low.fg, np.maximum(neck, clothes), out=low.fg)
    _blend(c.img, head, skin)
    np.maximum(c.fg, head, out=c.fg)

    ear_h = ident["ear_height"] + 0.1 * g["pitch"]
    side = c.window(g, -a - 0.8, a + 0.8, ear_h - 0.8, ear_h + 0.8)
    ear_u = np.abs(side.u - np.float32(g["head_u"])) - np.float32(a * 0.98 - 0.05)
    ear_v = side.v - np.float32(ear_h)
    ears = _ramp(np.sqrt((ear_u * 3.6) ** 2 + (ear_v * np.float32(1.8 / ident["ear_size"])) ** 2) - 1.0, aa * 3)
    ears *= 1 - _ramp(np.abs(side.u - np.float32(g["head_u"])) - np.float32(a * 0.9), aa)  # behind the face
    _blend(side.img, ears, skin * (0.92 - 0.15 * _gauss(ear_u, ear_v, 0.12, 0.3)))
    np.maximum(side.fg, ears, out=side.fg)


def _head_centre(ident: dict[str, float]) -> float:
    return 0.25 + ident["chin_drop"] / 2


def _strands(ident: dict[str, float], hu: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Brightness of hair strands: vertical waves whose frequency and wobble grow with curliness."""
    curl = 30 + 40 * ident["hair_curl"]
    return 0.88 + 0.12 * np.sin(np.float32(curl) * hu + np.float32(3 * ident["hair_curl"]) * np.sin(np.float32(curl / 3) * v))


def _draw_marks(c: _Canvas, ident: dict[str, float], skin: np.ndarray) -> None:
    """Blush, freckles, moles and the relief of cheeks and chin (all inside the face window)."""
    u, v = c.u, c.v
    c.img *= 1.0 + _gauss(np.abs(u) - 1.1, v - 1.1, 0.45, 0.4) * _rgb(0.05, -0.035, -0.035) * np.float32(ident["blush"])
    if ident["freckles"] > 0:
        freck = np.sin(41 * u + 13 * v + np.float32(ident["freckle_phase"])) * np.sin(17 * u - 37 * v)
        spots = np.clip((freck - 0.55) * 4, 0, 1) * _gauss(np.abs(u) - 0.8, v - 0.8, 0.7, 0.5)
        c.img *= 1.0 - np.float32(0.3 * ident["freckles"]) * spots
    face = c.height > 0.8
    for k, (mu, mv) in enumerate([(ident["mole_u"], ident["mole_v"]), (ident["mole_u2"], ident["mole_v2"])]):
        if k < ident["moles"]:
            _blend(c.img, face * _ramp(np.sqrt((u - mu) ** 2 + (v - mv) ** 2) - 0.07, c.aa), skin * 0.35)
    relief = 0.2 * _gauss(np.abs(u) - 1.15, v - 1.0, 0.5, 0.45) * np.float32(1 + 3 * ident["cheek_fullness"])
    relief += 0.1 * _gauss(u, v - (ident["mouth_height"] + 0.75 + ident["chin_drop"]), 0.5, 0.35)
    c.height += relief * face


def _draw_eyes(c: _Canvas, g: dict, ident: dict[str, float], nuis: dict) -> None:
    """Eye sockets (darker, recessed), white sclera, coloured iris, pupil, lash line and lid crease."""
    ue = c.u - np.float32(g["eye_u"])
    side = np.where(ue < 0, np.float32(-1), np.float32(1))
    ew = ident["eye_width"] * (1.0 + 0.3 * g["yaw"] * side)  # the eye turning away looks narrower
    ey = c.v - np.float32(g["eye_v"])
    ex = (np.abs(ue) - np.float32(g["es"])) / ew
    socket = _gauss(ex * ew, ey + 0.05, 0.6, 0.42)
    c.height -= 0.45 * socket
    c.img *= (1.0 - 0.25 * socket)
    tilt = ident["eye_tilt"]
    eyl = ey - np.float32(tilt) * ex * ew
    open_ = ident["eye_open"] * (1.0 - 0.45 * nuis["squint"])
    lid = 1.0 - ex * ex  # negative beyond the corners, which closes the lids there
    upper, lower = np.float32(-0.19 * open_) * lid, np.float32(0.12 * open_) * lid
    eye = _ramp(np.maximum(upper - eyl, eyl - lower), c.aa)
    _blend(c.img, eye, _rgb(0.92, 0.9, 0.87) * (1.0 - 0.3 * ex * ex))
    ir = ident["iris_size"]
    iris_d = np.sqrt((ue - np.float32(nuis["gaze"]) - side * np.float32(g["es"])) ** 2 + eyl * eyl)
    iris_col = _IRIS[int(ident["iris_hue"] * len(_IRIS)) % len(_IRIS)] * np.float32(1.0 - 0.6 * ident["iris_dark"])
    _blend(c.img, eye * _ramp(iris_d - ir, c.aa), iris_col * (0.55 + 0.45 * np.clip(1 - iris_d / ir, 0, 1)))
    _blend(c.img, eye * _ramp(iris_d - 0.4 * ir, c.aa), _rgb(0.03, 0.03, 0.04))
    lash = _ramp(np.abs(eyl - upper + 0.03) - 0.035 - 0.03 * np.clip(ex, 0, 1), c.aa) * (np.abs(ex) < 1.12)
    _blend(c.img, lash, _rgb(0.08, 0.06, 0.05))
    c.height -= 0.12 * _gauss(np.clip(np.abs(ex) - 0.6, 0, None), eyl - upper + 0.2, 0.3, 0.05)


def _draw_brows(c: _Canvas, g: dict, ident: dict[str, float], hair: np.ndarray) -> None:
    """Two arched brows (mirrored), thick at the inner end, in a darker shade of the hair."""
    ub = np.abs(c.u - np.float32(1.1 * g["yaw"]))
    bl = ident["brow_length"]
    bt = (ub - np.float32(g["es"] - 0.5 * bl)) * np.float32(1 / bl)  # 0 at the inner end, 1 at the outer end
    btc = np.clip(bt, 0, 1)
    by = c.v - np.float32(g["brow_v"]) + np.float32(ident["brow_arch"]) * np.sin(np.float32(np.pi) * btc) \
        - np.float32(ident["brow_tilt"]) * (bt - 0.5)
    thick = np.float32(ident["brow_thick"]) * (1.1 - 0.5 * btc)
    brows = _ramp(np.abs(by) - thick, c.aa) * _ramp(np.abs(bt - 0.5) - 0.5, 0.08) * np.float32(ident["brow_dark"])
    _blend(c.img, brows, hair * 0.7 + 0.02)
    c.height += 0.25 * _gauss(np.clip(ub - 1.2, 0, None), by + 0.05, 0.5, 0.22)


def _draw_nose(c: _Canvas, g: dict, ident: dict[str, float], skin: np.ndarray) -> None:
    """A ridge that widens to a rounded tip with alar wings (all shading), and two dark nostrils."""
    nw, tip_v = ident["nose_width"], g["tip_v"]
    top = g["eye_v"] - 0.2
    along = np.clip((c.v - np.float32(top)) * np.float32(1 / (tip_v - top)), 0.0, 1.0)
    un = c.u - np.float32(g["yaw"]) * (0.6 + 1.2 * along)
    below = np.exp(-(np.clip(c.v - np.float32(tip_v), 0, None) * 8) ** 2)
    width = np.float32(0.12 * nw) + np.float32(0.12 * nw) * along
    c.height += np.float32(ident["nose_bridge"]) * (along * (1.6 - 0.6 * along)) * below * np.exp(-0.5 * (un / width) ** 2)
    dv = c.v - np.float32(tip_v)
    c.height += np.float32(0.3 * ident["nose_tip"]) * _gauss(un, dv + 0.05, 0.2 * nw, 0.15)
    c.height += 0.2 * _gauss(np.abs(un) - np.float32(0.3 * nw), dv + 0.02, 0.12 * nw, 0.11)
    nostril = _ramp(np.sqrt(((np.abs(un) - np.float32(0.2 * nw)) * np.float32(1 / (0.09 * nw))) ** 2 + ((dv - 0.08) * 20) ** 2) - 1.0, 0.5)
    _blend(c.img, nostril, skin * 0.25)


def _draw_mouth(c: _Canvas, g: dict, ident: dict[str, float], nuis: dict, skin: np.ndarray) -> None:
    """Lips around a mouth line that curves up with a smile; an open mouth shows teeth and darkness."""
    mx = (c.u - np.float32(g["mouth_u"])) * np.float32(1 / g["mouth_w"])
    my = c.v - np.float32(g["mouth_v"])
    smile, gape = nuis["smile"], nuis["mouth_open"]
    line = np.float32(-0.18 * smile) * mx * mx + np.float32(0.05 * smile)
    shape = np.clip(1.0 - mx * mx, 0.0, None)
    gap = np.float32(0.2 * gape) * shape
    root = np.sqrt(shape)
    bow = 1.0 - 0.35 * np.exp(-(mx * 6.7) ** 2)
    top = line - gap - np.float32(ident["upper_lip"]) * root * bow
    bottom = line + gap + np.float32(ident["lower_lip"]) * root
    lips = _ramp(np.maximum(np.maximum(top - my, my - bottom), (np.abs(mx) - 1.0) * np.float32(g["mouth_w"])), c.aa)
    red = ident["lip_red"]
    _blend(c.img, lips, skin * _rgb(0.85, 0.55 * (1 - 0.5 * red), 0.55 * (1 - 0.4 * red)))
    if gape > 0.02:
        inside = _ramp(np.abs(my - line) - gap, c.aa) * (np.abs(mx) < 0.97)
        _blend(c.img, inside, np.where((my < line), _rgb(0.85, 0.82, 0.75), _rgb(0.25, 0.05, 0.05)))
    seam = _ramp(np.abs(my - line) - 0.02 - gap, c.aa) * (np.abs(mx) < 1.02)
    _blend(c.img, seam * 0.7, skin * 0.2)
    corners = _gauss((np.abs(mx) - 1.0) * np.float32(g["mouth_w"]), my - line, 0.06, 0.05)  # shadowed corners
    c.img *= 1.0 - 0.6 * corners
    c.height += 0.12 * lips


def _draw_front_hair(c: _Canvas, g: dict, ident: dict[str, float], hair: np.ndarray, skin: np.ndarray) -> None:
    """Hair over the forehead (above a hairline with an optional fringe) and over the temples."""
    u, v = c.u - np.float32(g["head_u"]), c.v
    a, vol = ident["face_width"], ident["hair_volume"]
    hairline = -ident["hairline"] + 0.25 * (u - np.float32(0.4 * ident["parting"])) ** 2 \
        + np.float32(0.6 * ident["fringe"]) * np.exp(-((u - np.float32(ident["parting"])) * np.float32(1 / 0.9)) ** 2)
    forehead = _ramp(v - hairline, c.aa * 2)
    temple = np.clip((np.abs(u) * np.float32(1 / a) - 0.84) * 6, 0, 1) * (v < 0.4 + 0.8 * (ident["hair_length"] > 1.0))
    head = c.height > 0  # the head and the hair behind it
    front = np.maximum(forehead, temple * np.float32(vol > 0)) * head
    colour = hair if vol > 0 else hair * 0.6 + skin * 0.4
    _blend(c.img, front, colour * _strands(ident, u * np.float32(1 / a), v))
    c.height += np.float32(0.08 * vol) * front


def _background(nuis: dict, size: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A two-colour gradient at a random angle plus a low-frequency colour texture."""
    ca, sa = math.cos(nuis["bg_angle"]) / size, math.sin(nuis["bg_angle"]) / size
    t = np.clip(xs * np.float32(ca) + ys * np.float32(sa) + np.float32(0.5 - 0.5 * (ca + sa) * size), 0, 1)
    c0, c1 = nuis["background"].astype(np.float32)
    bg = c0.reshape(3, 1, 1) + (c1 - c0).reshape(3, 1, 1) * t
    bg += np.float32(nuis["bg_texture"]) * cv2.resize(nuis["bg_coarse"], (size, size), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)
    return bg


def draw(settings: WorldSettings, kind: str, identity: int, image: int) -> tuple[np.ndarray, np.ndarray]:
    """Image `image` of identity `identity` of set `kind`: (uint8 RGB image, 5x2 landmarks)."""
    ident = sample_identity(settings.seed, kind, identity)
    nuis = sample_nuisance(settings.seed, kind, identity, image, settings.nuisance_strength)
    return render(ident, nuis, settings.image_size)


def image_names(kind: str, identities: int, images: int) -> list[tuple[int, int, str]]:
    """(identity, image, relative path) of every file of a set, in the layout of the data it mimics:
    FFHQ `00042.png`; ImageFolder `00042/0003.png`; LFW `Person_0042/Person_0042_0004.png` (1-based)."""
    world_set_size_keys(kind)  # refuses an unknown kind
    if kind == "ffhq":
        return [(i, 0, f"{i:05d}.png") for i in range(identities)]
    if kind == "labelled":
        return [(i, k, f"{i:05d}/{k:04d}.png") for i in range(identities) for k in range(images)]
    return [(i, k, f"Person_{i:04d}/Person_{i:04d}_{k + 1:04d}.png") for i in range(identities) for k in range(images)]


def _render_files(task: tuple[WorldSettings, str, str, list[tuple[int, int, str]]]) -> int:
    settings, kind, out_dir, files = task
    for identity, image, name in files:
        write_png(Path(out_dir) / name, draw(settings, kind, identity, image)[0])
    return len(files)


def render_set(out_dir: str | os.PathLike, kind: str, settings: WorldSettings, threads: int = 1) -> int:
    """Render one set (`ffhq`, `labelled` or `lfw`) into `out_dir`. Returns the number of images."""
    identities, images = settings.layout(kind)
    if identities < 1 or images < 1:
        raise ValueError(f"world set {kind!r} needs >= 1 identity and image, got {identities} x {images}")
    files = image_names(kind, identities, images)
    chunk = max(1, min(256, len(files) // max(1, 4 * threads)))
    tasks = [(settings, kind, str(out_dir), files[i:i + chunk]) for i in range(0, len(files), chunk)]
    with progress(total=len(files), desc=f"world {kind}", unit="img") as bar:
        if threads > 1:
            with ProcessPoolExecutor(max_workers=threads) as pool:
                for done in pool.map(_render_files, tasks):
                    bar.update(done)
        else:
            for task in tasks:
                bar.update(_render_files(task))
    return len(files)


def write_pairs(image_root: str | os.PathLike, pairs_path: str | os.PathLike, pairs_per_fold: int, seed: int,
                folds: int = 10) -> None:
    """Write an LFW-format `pairs.txt` over an LFW-layout folder (`Name/Name_0001.png`, ...).

    Like LFW's View 2, the people are split into `folds` disjoint groups; each fold holds
    `pairs_per_fold` matched pairs (two distinct images of one person with >= 2 images) then as many
    mismatched pairs (two people), all distinct within the fold.
    """
    root = Path(image_root)
    counts = {p.name: sum(1 for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
              for p in sorted(root.iterdir()) if p.is_dir()}
    counts = {name: n for name, n in counts.items() if n > 0}
    if len(counts) < 2 * folds:
        raise ValueError(f"{root} has {len(counts)} people; {folds} person-disjoint folds need >= {2 * folds}")
    rng = np.random.default_rng(derive_seed(seed, "world", "pairs"))
    names = sorted(counts)
    order = rng.permutation(len(names))
    lines = [f"{folds}\t{pairs_per_fold}"]
    for fold in range(folds):
        group = [names[i] for i in order[fold::folds]]
        matched = [(n, i, j) for n in group for i in range(1, counts[n] + 1) for j in range(i + 1, counts[n] + 1)]
        if len(matched) < pairs_per_fold:
            raise ValueError(f"fold {fold} of {root} offers {len(matched)} matched pairs, {pairs_per_fold} asked; "
                             "render more images per person or ask fewer pairs per fold")
        picked = rng.choice(len(matched), pairs_per_fold, replace=False)
        lines += [f"{n}\t{i}\t{j}" for n, i, j in (matched[k] for k in sorted(picked))]
        mismatched: set[tuple[str, int, str, int]] = set()
        capacity = sum(counts[a] * counts[b] for x, a in enumerate(group) for b in group[x + 1:])
        if capacity < pairs_per_fold:
            raise ValueError(f"fold {fold} of {root} offers {capacity} mismatched pairs, {pairs_per_fold} asked")
        while len(mismatched) < pairs_per_fold:
            a, b = sorted(rng.choice(len(group), 2, replace=False))
            first, second = group[a], group[b]
            mismatched.add((first, int(rng.integers(1, counts[first] + 1)), second, int(rng.integers(1, counts[second] + 1))))
        lines += [f"{a}\t{i}\t{b}\t{j}" for a, i, b, j in sorted(mismatched)]
    with atomic_path(pairs_path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")
