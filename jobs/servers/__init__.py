"""Only1MCP jobs/servers."""
