"""Only1MCP models."""
