"""The `refsr` command line; `main` is the console script's entry point (pyproject.toml)."""

from flows.cli.commands import main

__all__ = ["main"]
