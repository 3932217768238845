"""Only1MCP streams."""
