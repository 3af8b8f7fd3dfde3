"""Words that steer scenes: settings, times of day, weather, palettes, style hints.

Shared by the prompt expander and the sandbox engine, and printed in the docs, so that what a
user can write and what the sandbox draws stay one list.
"""

from __future__ import annotations

import itertools
import re

SETTINGS: dict[str, tuple[str, ...]] = {
    "city": (
        "city",
        "street",
        "downtown",
        "urban",
        "skyline",
        "metropolis",
        "avenue",
        "rooftop",
        "cyberpunk",
        "town",
        "tokyo",
        "york",
        "paris",
    ),
    "alley": ("alley", "alleyway", "backstreet", "lane"),
    "beach": ("beach", "ocean", "sea", "shore", "coast", "surf", "island", "tropical", "seaside"),
    "forest": ("forest", "woods", "jungle", "trees", "woodland", "grove", "park", "garden"),
    "mountains": (
        "mountain",
        "mountains",
        "peak",
        "peaks",
        "alps",
        "cliff",
        "canyon",
        "hills",
        "valley",
    ),
    "desert": ("desert", "dunes", "dune", "sahara", "oasis", "wasteland"),
    "snow": ("snowfield", "arctic", "glacier", "tundra", "frozen", "ski", "icefield"),
    "space": ("space", "galaxy", "nebula", "cosmic", "orbit", "spaceship", "planet", "cosmos"),
    "interior": (
        "cafe",
        "café",
        "coffee",
        "room",
        "interior",
        "kitchen",
        "library",
        "office",
        "bar",
        "restaurant",
        "home",
        "bedroom",
        "indoors",
        "shop",
    ),
    "studio": ("studio", "headshot", "backdrop", "photoshoot"),
}

TIMES: dict[str, tuple[str, ...]] = {
    "golden_hour": ("golden", "goldenhour"),
    "sunset": ("sunset", "dusk", "evening", "twilight"),
    "morning": ("morning", "sunrise", "dawn"),
    "night": ("night", "midnight", "moonlight", "moonlit", "nighttime", "dark"),
    "neon": ("neon", "cyberpunk", "synthwave", "vaporwave"),
    "noon": ("noon", "midday", "sunny", "bright", "daylight", "day"),
    "overcast": ("overcast", "cloudy", "grey", "gray", "gloomy"),
}

WEATHER: dict[str, tuple[str, ...]] = {
    "rain": ("rain", "rainy", "storm", "stormy", "drizzle", "downpour"),
    "snowfall": ("snow", "snowing", "snowfall", "blizzard", "snowy", "snowflakes", "winter"),
    "fog": ("misty", "mist", "fog", "foggy", "haze", "hazy"),
}

PALETTES: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.2, 0.2),
    "blue": (0.2, 0.35, 0.85),
    "green": (0.25, 0.7, 0.3),
    "purple": (0.55, 0.25, 0.75),
    "pink": (0.95, 0.5, 0.7),
    "orange": (0.95, 0.55, 0.15),
    "teal": (0.1, 0.6, 0.6),
    "gold": (0.9, 0.75, 0.3),
    "pastel": (0.85, 0.8, 0.9),
    "sepia": (0.7, 0.55, 0.35),
    "monochrome": (0.5, 0.5, 0.5),
}

STYLE_HINTS: dict[str, tuple[str, ...]] = {
    "REALISTIC": (
        "photo",
        "photograph",
        "photorealistic",
        "realistic",
        "cinematic",
        "dslr",
        "film",
        "35mm",
        "portrait",
        "headshot",
    ),
    "DESIGN": (
        "poster",
        "logo",
        "flat",
        "vector",
        "graphic",
        "minimalist",
        "sticker",
        "illustration",
        "icon",
    ),
    "FICTION": (
        "fantasy",
        "dragon",
        "knight",
        "wizard",
        "fairy",
        "magic",
        "magical",
        "elf",
        "sci-fi",
        "scifi",
        "comic",
        "anime",
        "castle",
        "mythical",
    ),
    "GENERAL": (
        "painting",
        "painted",
        "oil",
        "watercolor",
        "watercolour",
        "impressionist",
        "sketch",
        "artwork",
    ),
}

# Elements a negative prompt can remove, with the words that name them.
ELEMENT_WORDS: dict[str, tuple[str, ...]] = {
    "snowfall": ("snow", "snowfall", "snowflakes", "snowing"),
    "snow_cover": ("snow",),
    "rain": ("rain", "raindrops", "wet"),
    "fog": ("fog", "mist", "haze", "smoke"),
    "people": ("people", "person", "persons", "crowd", "humans", "pedestrians", "figures"),
    "text": (
        "text",
        "letters",
        "words",
        "writing",
        "signs",
        "sign",
        "watermark",
        "logo",
        "typography",
    ),
    "clouds": ("clouds", "cloud"),
    "trees": ("trees", "tree", "forest"),
    "buildings": ("buildings", "building", "skyscrapers", "houses"),
    "stars": ("stars", "star"),
    "sun": ("sun", "sunlight"),
    "moon": ("moon",),
    "birds": ("birds", "bird"),
    "mountains": ("mountains", "mountain", "hills"),
    "water": ("water", "sea", "ocean", "waves"),
    "planet": ("planet", "planets"),
}

_TOKEN = re.compile(r"[a-zà-ÿ0-9'-]+")


def tokens(text: str) -> list[str]:
    """Lower-case words of ``text``; 'golden hour' also yields the joined token 'goldenhour'."""
    words = _TOKEN.findall(text.lower())
    joined = [a + b for a, b in itertools.pairwise(words)]
    return words + joined


def first_match(words: list[str], table: dict[str, tuple[str, ...]]) -> str | None:
    """The category whose word appears earliest in the prompt (the user's main intent)."""
    best: tuple[int, str] | None = None
    for category, names in table.items():
        for index, word in enumerate(words):
            if word in names and (best is None or index < best[0]):
                best = (index, category)
                break
    return best[1] if best else None


def all_matches(words: list[str], table: dict[str, tuple[str, ...]]) -> set[str]:
    present = set(words)
    return {category for category, names in table.items() if present.intersection(names)}
