"""Only1MCP jobs."""
