"""Procedural scenes from prompt words: parse a ``SceneSpec`` (pure), then paint it.

Painting works on float32 RGB in [0, 1] at the output size, with whole-array numpy/OpenCV
operations only (no per-pixel Python), so a 1024x1024 background costs tens of milliseconds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from castframe.engines.lexicon import (
    ELEMENT_WORDS,
    PALETTES,
    SETTINGS,
    TIMES,
    WEATHER,
    all_matches,
    first_match,
    tokens,
)

Color = tuple[float, float, float]

# Default elements each setting draws (before weather and negative prompt).
SETTING_ELEMENTS: dict[str, set[str]] = {
    "city": {"buildings", "people", "text", "clouds"},
    "alley": {"buildings", "text"},
    "beach": {"water", "clouds", "birds", "sun"},
    "forest": {"trees", "clouds"},
    "mountains": {"mountains", "clouds", "birds", "sun"},
    "desert": {"sun"},
    "snow": {"mountains", "snow_cover", "snowfall", "clouds"},
    "space": {"stars", "planet"},
    "interior": {"text"},
    "studio": set(),
}

# (sky top, sky at horizon, ground near, ambient light tint) per time of day.
LIGHTING: dict[str, tuple[Color, Color, Color, Color]] = {
    "noon": ((0.25, 0.5, 0.9), (0.7, 0.85, 1.0), (0.45, 0.45, 0.42), (1.0, 1.0, 0.97)),
    "morning": ((0.45, 0.6, 0.85), (0.95, 0.85, 0.75), (0.45, 0.45, 0.45), (1.0, 0.96, 0.92)),
    "golden_hour": ((0.35, 0.45, 0.75), (1.0, 0.75, 0.4), (0.5, 0.4, 0.3), (1.0, 0.88, 0.7)),
    "sunset": ((0.3, 0.2, 0.5), (1.0, 0.5, 0.3), (0.35, 0.25, 0.25), (1.0, 0.8, 0.7)),
    "night": ((0.02, 0.03, 0.1), (0.1, 0.12, 0.25), (0.08, 0.08, 0.1), (0.7, 0.75, 0.95)),
    "neon": ((0.08, 0.02, 0.18), (0.6, 0.1, 0.5), (0.1, 0.05, 0.15), (0.95, 0.8, 1.0)),
    "overcast": ((0.55, 0.58, 0.62), (0.78, 0.8, 0.82), (0.4, 0.4, 0.4), (0.93, 0.95, 0.97)),
}
SETTING_DEFAULT_TIME = {"space": "night", "interior": "noon", "studio": "noon"}
GROUND: dict[str, Color] = {
    "city": (0.3, 0.3, 0.32),
    "alley": (0.28, 0.25, 0.24),
    "beach": (0.9, 0.82, 0.62),
    "forest": (0.2, 0.35, 0.15),
    "mountains": (0.35, 0.4, 0.3),
    "desert": (0.9, 0.72, 0.45),
    "snow": (0.93, 0.95, 0.98),
    "space": (0.4, 0.38, 0.4),
    "interior": (0.45, 0.3, 0.2),
    "studio": (0.8, 0.8, 0.8),
}
SIGN_WORDS = {"city": "HOTEL", "alley": "BAR", "interior": "CAFE"}


@dataclass(frozen=True)
class SceneSpec:
    setting: str
    time: str
    weather: frozenset[str]
    palette: str | None
    elements: frozenset[str]
    removed: frozenset[str] = field(default_factory=frozenset)
    horizon: float = 0.6
    """Fraction of the height where sky meets ground."""

    def describe(self) -> dict[str, object]:
        return {
            "setting": self.setting,
            "time": self.time,
            "weather": sorted(self.weather),
            "palette": self.palette,
            "elements": sorted(self.elements),
            "removed": sorted(self.removed),
        }


def negated_elements(negative_prompt: str | None) -> set[str]:
    if not negative_prompt:
        return set()
    return all_matches(tokens(negative_prompt), ELEMENT_WORDS)


def parse_scene(prompt: str, negative_prompt: str | None, seed: int) -> SceneSpec:
    """Pure: prompt words (and, for unknown prompts, a hash of the text) to a scene."""
    words = tokens(prompt)
    digest = hashlib.sha256(prompt.strip().lower().encode()).digest()
    setting = first_match(words, SETTINGS) or sorted(SETTINGS)[digest[0] % len(SETTINGS)]
    time = (
        first_match(words, TIMES)
        or SETTING_DEFAULT_TIME.get(setting)
        or ("noon", "golden_hour", "morning", "sunset", "overcast")[digest[1] % 5]
    )
    weather = all_matches(words, WEATHER)
    if setting == "snow":
        weather.add("snowfall")
    palette = first_match(words, {name: (name,) for name in PALETTES})
    elements = set(SETTING_ELEMENTS[setting])
    elements |= {w for w in weather}
    if time in ("night", "neon") and setting not in ("interior", "studio"):
        elements |= {"stars", "moon"} if setting != "city" else {"moon"}
        elements.discard("sun")
        elements.discard("birds")
    if time == "overcast":
        elements.discard("sun")
    if "snowfall" in weather and setting in ("city", "alley", "forest", "mountains"):
        elements.add("snow_cover")
    mentioned = all_matches(words, ELEMENT_WORDS) - {"snow_cover", "text"}
    elements |= mentioned & {"people", "birds", "clouds", "trees", "mountains", "stars", "moon"}
    removed = negated_elements(negative_prompt)
    elements -= removed
    weather -= removed
    rng = np.random.default_rng(seed)
    horizon = {"studio": 0.78, "interior": 0.72, "space": 0.85}.get(setting, 0.55)
    horizon += float(rng.uniform(-0.06, 0.06))
    return SceneSpec(
        setting=setting,
        time=time,
        weather=frozenset(weather),
        palette=palette,
        elements=frozenset(elements),
        removed=frozenset(removed),
        horizon=horizon,
    )


def _vertical_gradient(height: int, width: int, top: Color, bottom: Color) -> np.ndarray:
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    column = (1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32)
    return np.broadcast_to(column, (height, width, 3)).copy()


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Fractal value noise in [0, 1]: three octaves of blurred random cells."""
    total = np.zeros((height, width), np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(3):
        count = cells * 2**octave
        cells_y = max(2, int(count * height / max(width, 1)))
        small = rng.random((cells_y, count), dtype=np.float32)
        small = cv2.GaussianBlur(small, (0, 0), 0.8)
        total += amplitude * cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
        norm += amplitude
        amplitude *= 0.5
    total /= norm
    low, high = float(total.min()), float(total.max())
    return (total - low) / max(high - low, 1e-6)


def _ridge(rng: np.random.Generator, width: int, octaves: int, roughness: float) -> np.ndarray:
    """A 1-D fractal line in [0, 1] (mountain and dune silhouettes)."""
    line = np.zeros(width, np.float32)
    amplitude = 1.0
    for octave in range(octaves):
        points = 2 ** (octave + 2)
        knots = rng.random(points + 1).astype(np.float32)
        line += amplitude * np.interp(np.linspace(0, points, width), np.arange(points + 1), knots)
        amplitude *= roughness
    line -= line.min()
    return line / max(float(line.max()), 1e-6)


def _fill_below(canvas: np.ndarray, tops: np.ndarray, color: Color, shade: float = 0.0) -> None:
    """Paint every pixel below the per-column line ``tops`` (row index) in ``color``."""
    height = canvas.shape[0]
    rows = np.arange(height, dtype=np.float32)[:, None]
    mask = rows >= tops[None, :]
    depth = np.clip((rows - tops[None, :]) / max(height * 0.3, 1), 0, 1)
    tint = np.asarray(color, np.float32) * (1 - shade * depth[..., None])
    canvas[mask] = tint[mask]


def render_scene(spec: SceneSpec, width: int, height: int, seed: int, detail: int) -> np.ndarray:
    """Paint ``spec`` at width x height; ``detail`` 0 (turbo), 1 (default), 2 (quality)."""
    rng = np.random.default_rng(seed)
    sky_top, sky_low, ground_near, _ = LIGHTING[spec.time]
    horizon = int(height * spec.horizon)
    canvas = _vertical_gradient(height, width, sky_top, sky_low)
    if spec.setting == "studio":
        return _studio(canvas, spec, width, height, rng)
    if spec.setting == "interior":
        _interior(canvas, spec, width, height, rng)
    else:
        _sky_objects(canvas, spec, width, height, horizon, rng, detail)
        _far_layer(canvas, spec, width, height, horizon, rng, detail)
        _ground(canvas, spec, width, height, horizon, ground_near, rng)
    if "people" in spec.elements:
        _people(canvas, width, height, horizon, rng)
    if "text" in spec.elements:
        _sign(canvas, spec, width, height, horizon, rng)
    _weather(canvas, spec, width, height, rng, detail)
    return canvas


def _sky_objects(
    canvas: np.ndarray,
    spec: SceneSpec,
    width: int,
    height: int,
    horizon: int,
    rng: np.random.Generator,
    detail: int,
) -> None:
    if "stars" in spec.elements:
        count = int(width * height / (900 if spec.setting == "space" else 2500))
        ys = rng.integers(0, max(horizon, 1), count)
        xs = rng.integers(0, width, count)
        canvas[ys, xs] = np.clip(rng.uniform(0.6, 1.0, (count, 1)), 0, 1).astype(np.float32)
    if spec.setting == "space":
        nebula = _smooth_noise(rng, height, width, 6 + 4 * detail)
        hue = np.asarray(PALETTES.get(spec.palette or "purple", (0.55, 0.25, 0.75)), np.float32)
        canvas += (nebula[..., None] ** 3) * hue * 0.6
    if "clouds" in spec.elements:
        clouds = _smooth_noise(rng, height, width, 8 + 6 * detail)
        clouds = np.clip((clouds - 0.55) * 3.0, 0, 1)
        fade = np.clip(1 - np.arange(height, dtype=np.float32) / max(horizon, 1), 0, 1)[:, None]
        tone = 0.35 if spec.time in ("night", "neon") else 0.95
        canvas += (clouds * fade)[..., None] * (tone - canvas) * 0.8
    sun_x = int(rng.uniform(0.15, 0.85) * width)
    if "sun" in spec.elements:
        sun_y = int(horizon * (0.85 if spec.time in ("sunset", "golden_hour") else 0.3))
        _glow(canvas, (sun_x, sun_y), int(0.06 * width), (1.0, 0.93, 0.7))
    if "moon" in spec.elements:
        _glow(canvas, (sun_x, int(horizon * 0.25)), int(0.035 * width), (0.95, 0.95, 1.0))
    if "planet" in spec.elements:
        center = (int(rng.uniform(0.2, 0.8) * width), int(rng.uniform(0.15, 0.4) * height))
        radius = int(rng.uniform(0.1, 0.18) * width)
        color = tuple(float(c) for c in rng.uniform(0.3, 0.9, 3))
        cv2.circle(canvas, center, radius, color, -1, cv2.LINE_AA)
        cv2.ellipse(
            canvas,
            center,
            (int(radius * 1.7), int(radius * 0.35)),
            -15,
            0,
            360,
            (0.9, 0.85, 0.7),
            max(2, width // 200),
            cv2.LINE_AA,
        )
    if "birds" in spec.elements:
        for _ in range(int(rng.integers(3, 9))):
            x, y = int(rng.uniform(0.1, 0.9) * width), int(rng.uniform(0.1, 0.5) * horizon)
            span = int(rng.uniform(0.008, 0.018) * width)
            pts = np.array([[x - span, y - span // 2], [x, y], [x + span, y - span // 2]])
            cv2.polylines(canvas, [pts], False, (0.1, 0.1, 0.12), max(1, width // 500), cv2.LINE_AA)


def _glow(canvas: np.ndarray, center: tuple[int, int], radius: int, color: Color) -> None:
    """A disk with a soft halo; computed only in the box where the halo is visible."""
    height, width = canvas.shape[:2]
    reach = radius * 10
    x0, x1 = max(center[0] - reach, 0), min(center[0] + reach, width)
    y0, y1 = max(center[1] - reach, 0), min(center[1] + reach, height)
    if x0 >= x1 or y0 >= y1:
        return
    ys, xs = np.ogrid[y0:y1, x0:x1]
    distance = np.sqrt((xs - center[0]) ** 2 + (ys - center[1]) ** 2, dtype=np.float32)
    disk = np.clip(radius + 1 - distance, 0, 1)
    halo = np.exp(-((distance / (radius * 4.0)) ** 2)) * 0.45
    weight = np.maximum(disk, halo)[..., None]
    region = canvas[y0:y1, x0:x1]
    region += weight * (np.asarray(color, np.float32) - region)


def _far_layer(
    canvas: np.ndarray,
    spec: SceneSpec,
    width: int,
    height: int,
    horizon: int,
    rng: np.random.Generator,
    detail: int,
) -> None:
    haze = np.asarray(LIGHTING[spec.time][1], np.float32)
    if "mountains" in spec.elements:
        for layer, shade in ((0, 0.55), (1, 0.35)):
            ridge = _ridge(rng, width, 5 + detail, 0.5)
            tops = horizon - (0.28 - 0.1 * layer) * height * ridge - 0.02 * height
            base = np.asarray((0.3, 0.33, 0.4), np.float32) * (1 - shade) + haze * shade
            if "snow_cover" in spec.elements and layer == 0:
                base = np.asarray((0.85, 0.88, 0.93), np.float32)
            _fill_below(canvas, tops.astype(np.float32), tuple(base.tolist()))
    if "buildings" in spec.elements:
        _skyline(canvas, spec, width, height, horizon, rng, detail)
    if "trees" in spec.elements:
        dark = (0.08, 0.2, 0.1) if spec.time not in ("night", "neon") else (0.03, 0.06, 0.05)
        for _ in range(int(width / 22)):
            x = int(rng.uniform(0, width))
            tree_h = int(rng.uniform(0.12, 0.3) * height)
            half = int(tree_h * rng.uniform(0.18, 0.28))
            base_y = horizon + int(rng.uniform(-0.01, 0.03) * height)
            pts = np.array([[x, base_y - tree_h], [x - half, base_y], [x + half, base_y]])
            cv2.fillPoly(canvas, [pts], dark, cv2.LINE_AA)
    if spec.setting == "desert":
        for layer in range(2):
            ridge = _ridge(rng, width, 3, 0.4)
            tops = horizon - (0.08 - 0.03 * layer) * height * ridge
            tone = np.asarray(GROUND["desert"], np.float32) * (0.8 + 0.12 * layer)
            _fill_below(canvas, tops.astype(np.float32), tuple(tone.tolist()))


def _skyline(
    canvas: np.ndarray,
    spec: SceneSpec,
    width: int,
    height: int,
    horizon: int,
    rng: np.random.Generator,
    detail: int,
) -> None:
    night = spec.time in ("night", "neon", "sunset")
    x = 0
    while x < width:
        bw = int(rng.uniform(0.05, 0.12) * width)
        bh = int(rng.uniform(0.15, 0.5) * height)
        top = max(horizon - bh, 0)
        shade = float(rng.uniform(0.12, 0.3)) * (0.5 if night else 1.0)
        canvas[top:horizon, x : x + bw] = (shade, shade * 1.02, shade * 1.1)
        if detail > 0 or night:
            lit = (1.0, 0.85, 0.5) if spec.time != "neon" else (1.0, 0.3, 0.8)
            step = max(width // 90, 4)
            rows = np.arange(top + step, horizon - step, step * 2)
            cols = np.arange(x + step, x + bw - step, step * 2)
            if rows.size and cols.size:
                on = rng.random((rows.size, cols.size)) < (0.45 if night else 0.2)
                for r_i, c_i in zip(*np.nonzero(on), strict=True):
                    r, c = int(rows[r_i]), int(cols[c_i])
                    canvas[r : r + step, c : c + step] = lit if night else (0.6, 0.7, 0.8)
        x += bw + int(rng.uniform(0, 0.01) * width)


def _ground(
    canvas: np.ndarray,
    spec: SceneSpec,
    width: int,
    height: int,
    horizon: int,
    near: Color,
    rng: np.random.Generator,
) -> None:
    far = np.asarray(GROUND[spec.setting], np.float32)
    if "snow_cover" in spec.elements:
        far = np.asarray(GROUND["snow"], np.float32)
    elif spec.setting == "snow":  # snow removed by the negative prompt: bare frozen ground
        far = np.asarray((0.42, 0.4, 0.38), np.float32)
    light = np.asarray(LIGHTING[spec.time][3], np.float32)
    if spec.setting == "beach" and "water" in spec.elements:
        sea_end = horizon + int(0.12 * height)
        sea = _vertical_gradient(sea_end - horizon, width, (0.1, 0.35, 0.55), (0.2, 0.55, 0.7))
        canvas[horizon:sea_end] = sea * light
        horizon = sea_end
    ground = _vertical_gradient(height - horizon, width, tuple(far * light), tuple(far * 0.8))
    texture = _smooth_noise(rng, height - horizon, width, 48)[..., None]
    canvas[horizon:] = ground * (0.9 + 0.2 * texture)
    if spec.setting in ("city", "alley"):
        lane = horizon + (height - horizon) // 2
        for x in range(0, width, max(width // 8, 1)):
            cv2.line(
                canvas, (x, lane), (x + width // 16, lane), (0.8, 0.8, 0.7), max(2, height // 200)
            )


def _interior(
    canvas: np.ndarray, spec: SceneSpec, width: int, height: int, rng: np.random.Generator
) -> None:
    horizon = int(height * spec.horizon)
    wall = np.asarray(PALETTES.get(spec.palette or "", (0.75, 0.62, 0.48)), np.float32)
    canvas[:horizon] = _vertical_gradient(horizon, width, tuple(wall * 0.8), tuple(wall))
    canvas[horizon:] = _vertical_gradient(
        height - horizon, width, GROUND["interior"], (0.3, 0.2, 0.12)
    )
    wx, ww = int(rng.uniform(0.05, 0.55) * width), int(0.35 * width)
    wy, wh = int(0.12 * height), int(0.35 * height)
    outside = np.asarray(LIGHTING[spec.time][1], np.float32)
    canvas[wy : wy + wh, wx : wx + ww] = outside
    frame = (0.25, 0.17, 0.1)
    cv2.rectangle(canvas, (wx, wy), (wx + ww, wy + wh), frame, max(4, width // 120))
    cv2.line(canvas, (wx + ww // 2, wy), (wx + ww // 2, wy + wh), frame, max(3, width // 160))
    for _ in range(3):
        lx = int(rng.uniform(0.1, 0.9) * width)
        _glow(canvas, (lx, int(0.08 * height)), int(0.02 * width), (1.0, 0.9, 0.6))
    table_y = horizon + int(0.08 * height)
    cv2.rectangle(canvas, (0, table_y), (width, table_y + height // 40), (0.35, 0.22, 0.12), -1)


def _studio(
    canvas: np.ndarray, spec: SceneSpec, width: int, height: int, rng: np.random.Generator
) -> np.ndarray:
    base = np.asarray(PALETTES.get(spec.palette or "", (0.55, 0.58, 0.62)), np.float32)
    ys, xs = np.ogrid[:height, :width]
    cx, cy = width * float(rng.uniform(0.35, 0.65)), height * 0.4
    r = np.sqrt(((xs - cx) / width) ** 2 + ((ys - cy) / height) ** 2, dtype=np.float32)
    falloff = np.clip(1.15 - r * 1.3, 0.35, 1.0)[..., None]
    return (base * falloff).astype(np.float32)


def _people(
    canvas: np.ndarray, width: int, height: int, horizon: int, rng: np.random.Generator
) -> None:
    for _ in range(int(rng.integers(3, 8))):
        x = int(rng.uniform(0.03, 0.97) * width)
        h = int(rng.uniform(0.05, 0.1) * height)
        base = horizon + int(rng.uniform(0.0, 0.06) * height)
        color = (0.06, 0.06, 0.08)
        cv2.circle(canvas, (x, base - h + h // 8), max(h // 8, 2), color, -1, cv2.LINE_AA)
        cv2.rectangle(canvas, (x - h // 8, base - h + h // 4), (x + h // 8, base), color, -1)


def _sign(
    canvas: np.ndarray,
    spec: SceneSpec,
    width: int,
    height: int,
    horizon: int,
    rng: np.random.Generator,
) -> None:
    word = SIGN_WORDS.get(spec.setting, "OPEN")
    scale = width / 600
    thickness = max(2, int(scale * 2))
    (tw, th), _ = cv2.getTextSize(word, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x = int(rng.uniform(0.05, 0.95) * (width - tw - 20))
    y = max(int(horizon * rng.uniform(0.35, 0.6)), th + 20)
    glow = (1.0, 0.3, 0.7) if spec.time == "neon" else (0.95, 0.85, 0.3)
    cv2.rectangle(canvas, (x - 10, y - th - 10), (x + tw + 10, y + 10), (0.1, 0.08, 0.08), -1)
    cv2.putText(canvas, word, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, glow, thickness, cv2.LINE_AA)


def _weather(
    canvas: np.ndarray,
    spec: SceneSpec,
    width: int,
    height: int,
    rng: np.random.Generator,
    detail: int,
) -> None:
    if "fog" in spec.weather:
        fog = np.asarray((0.82, 0.84, 0.86), np.float32)
        depth = np.clip(
            1 - np.abs(np.arange(height, dtype=np.float32) / height - spec.horizon) * 2.2, 0, 1
        )
        noise = _smooth_noise(rng, height, width, 5)
        amount = (0.35 + 0.4 * depth[:, None]) * (0.75 + 0.25 * noise)
        canvas += amount[..., None] * (fog - canvas)
    if "rain" in spec.weather:
        streaks = np.zeros((height, width), np.float32)
        count = int(width * height / 3000) * (1 + detail)
        xs, ys = rng.integers(0, width, count), rng.integers(0, height, count)
        length = max(height // 40, 4)
        for x, y in zip(xs.tolist(), ys.tolist(), strict=True):
            cv2.line(streaks, (x, y), (x - length // 4, y + length), 1.0, 1)
        canvas += streaks[..., None] * 0.25 * (0.85 - canvas)
        canvas *= 0.92
    if "snowfall" in spec.weather:
        flakes = np.zeros((height, width), np.float32)
        count = int(width * height / 1800) * (1 + detail)
        xs, ys = rng.integers(0, width, count), rng.integers(0, height, count)
        radii = rng.integers(1, max(width // 350, 2) + 1, count)
        for x, y, r in zip(xs.tolist(), ys.tolist(), radii.tolist(), strict=True):
            cv2.circle(flakes, (x, y), r, 1.0, -1)
        flakes = cv2.GaussianBlur(flakes, (0, 0), 0.8)
        canvas += flakes[..., None] * (1.0 - canvas)
