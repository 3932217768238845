"""The online feature store (Redis)."""
