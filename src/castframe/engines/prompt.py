"""Magic prompt: a deterministic expansion of a short prompt with scene and light detail.

Same (prompt, option, seed), same expansion, so retries and reruns are reproducible. Every
engine calls this one function; the result's ``prompt`` is what it rendered.
"""

from __future__ import annotations

import hashlib

from castframe.engines.lexicon import SETTINGS, TIMES, first_match, tokens

AUTO_EXPAND_BELOW_WORDS = 30

_SETTING_DETAIL: dict[str | None, tuple[str, ...]] = {
    "city": (
        "wet asphalt reflecting shop lights",
        "towering buildings on both sides",
        "busy avenue with distant traffic",
    ),
    "alley": ("brick walls and hanging lanterns", "narrow alley with fire escapes"),
    "beach": ("gentle waves rolling onto pale sand", "wide shoreline under an open sky"),
    "forest": ("tall pines with dappled light", "mossy forest floor and ferns"),
    "mountains": ("jagged peaks fading into haze", "rocky ridgeline above the valley"),
    "desert": ("rolling dunes with sharp ridges", "sun-baked sand stretching to the horizon"),
    "snow": ("fresh powder snow and frosted air", "icy plain under a pale sky"),
    "space": ("a field of distant stars and a ringed planet", "deep nebula clouds"),
    "interior": ("warm wooden interior with soft lamps", "cozy room with large windows"),
    "studio": ("seamless studio backdrop", "softbox key light and gentle fill"),
    None: ("a richly detailed environment", "a coherent background with depth"),
}
_LIGHT: dict[str | None, tuple[str, ...]] = {
    "golden_hour": ("warm golden-hour rim light",),
    "sunset": ("orange and magenta sunset glow",),
    "morning": ("soft cool morning light",),
    "night": ("moonlit night with deep shadows",),
    "neon": ("vivid neon reflections in pink and cyan",),
    "noon": ("crisp midday sunlight",),
    "overcast": ("soft diffuse overcast light",),
    None: ("natural soft lighting", "cinematic lighting", "balanced daylight"),
}
_CAMERA = (
    "sharp focus on the character",
    "medium shot, eye level",
    "shallow depth of field",
    "full body in frame",
    "rule-of-thirds composition",
)


def _pick(options: tuple[str, ...], digest: bytes, slot: int) -> str:
    return options[digest[slot] % len(options)]


def should_expand(prompt: str, option: str) -> bool:
    if option == "On":
        return True
    if option == "Off":
        return False
    return len(prompt.split()) < AUTO_EXPAND_BELOW_WORDS


def expand_prompt(prompt: str, option: str, seed: int) -> str:
    """The prompt an engine should render, after magic prompt (``option``: Auto, On, Off)."""
    prompt = prompt.strip()
    if not should_expand(prompt, option):
        return prompt
    words = tokens(prompt)
    setting = first_match(words, SETTINGS)
    light = first_match(words, TIMES)
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    parts = [
        prompt.rstrip(" .,"),
        _pick(_SETTING_DETAIL[setting], digest, 0),
        _pick(_LIGHT[light], digest, 1),
        _pick(_CAMERA, digest, 2),
        "consistent character, highly detailed",
    ]
    return ", ".join(parts)
