"""Only1MCP jobs/bench."""
