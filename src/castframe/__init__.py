"""Castframe: a self-hosted, Apiframe-v2-compatible API for character-consistent images."""

__version__ = "0.1.0"
