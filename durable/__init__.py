"""Durable files for every room: atomic writes and content hashes (standard library only)."""
