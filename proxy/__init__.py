"""Only1MCP proxy."""
