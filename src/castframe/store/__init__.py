"""Persistence: tables, connections, migrations and dialect-specific queue SQL."""
