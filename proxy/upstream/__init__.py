"""Only1MCP proxy/upstream."""
