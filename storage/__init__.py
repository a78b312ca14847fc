"""Durable storage behind one interface: SQLite (embedded default) and PostgreSQL."""
