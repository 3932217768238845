"""Only1MCP proxy/routing."""
