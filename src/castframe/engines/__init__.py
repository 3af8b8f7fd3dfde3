"""Engines turn validated params and decoded images into pictures. They never touch the DB."""
