"""Settings are grouped by component: every one belongs to exactly one group."""

from __future__ import annotations

from castframe.config import COMPONENTS, Settings, component_of


def test_every_setting_belongs_to_a_component() -> None:
    ungrouped = [name for name in Settings.model_fields if component_of(name) is None]
    assert ungrouped == []


def test_components_are_named_once() -> None:
    names = [component for component, _entries in COMPONENTS]
    assert len(names) == len(set(names))


def test_prefixes_pick_the_longest_match() -> None:
    assert component_of("max_attempts") == "Worker"  # exact name beats the max_ prefix
    assert component_of("max_image_bytes") == "Limits and fair use"
    assert component_of("upload_retention_hours") == "Retention"
    assert component_of("ideogram_api_key") == "Engine: ideogram"
