"""Only1MCP feature_store."""
