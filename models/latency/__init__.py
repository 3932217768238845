"""Latency models: point-in-time features, XGBoost quantile training, ONNX export and serving, baselines."""
