"""The offline feature store: Parquet files, DuckDB views."""
