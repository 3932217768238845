"""Subcommands of the only1mcp CLI."""
