"""ONNX export of the latency boosters, the parity check, and serving with onnxruntime.

Training uses the native XGBoost library; serving uses onnxruntime (one small C++ session per
quantile, no XGBoost import in the hot loop, the same artefact in every worker). The export is
only trusted once checked: :func:`export` converts both boosters and refuses (``ParityError``)
when ONNX and native predictions differ by more than ``PARITY_TOLERANCE`` (0.1 %) on the rows
given — typically the hold-out.

:class:`LatencyModel` loads an artefact folder (``p50.onnx``, ``p95.onnx``, ``metadata.json``, as
the registry writes it) and refuses, with :class:`ModelError`, anything it cannot vouch for: a file
that is not a valid ONNX model, a checksum that differs from the metadata, or features (names or
``FEATURE_VERSION``) other than the ones this code computes — a model fed the wrong columns
predicts nonsense silently, so that is an error, not a warning.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from only1mcp.models.errors import ModelError, ParityError
from only1mcp.models.latency.features import FEATURE_NAMES, FEATURE_VERSION
from only1mcp.models.latency.residual import floor_spec_of, raw_predict, spec_of

__all__ = ["INPUT_NAME", "PARITY_TOLERANCE", "FILES", "to_onnx", "parity", "export", "sha256",
           "check_compatible", "LatencyModel"]

INPUT_NAME = "input"  # the ONNX graph's one input: float32 [n, len(FEATURE_NAMES)]
PARITY_TOLERANCE = 1e-3  # max relative difference, ONNX vs native, in milliseconds
FILES = {"p50": "p50.onnx", "p95": "p95.onnx"}
_FLOOR_MS = 0.01  # relative differences are taken against at least this (a 0 ms prediction has none)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_onnx(booster: Any, n_features: int = len(FEATURE_NAMES)) -> bytes:
    """One XGBoost booster as a serialized ONNX model, input ``INPUT_NAME`` float32 [None, n_features].

    The booster must use default feature names (``f0`` …): onnxmltools maps splits by index. A
    booster trained from a base margin (models/latency/residual.py) gets that margin in the graph."""
    import onnxmltools
    from onnxmltools.convert.common.data_types import FloatTensorType

    try:
        model = onnxmltools.convert_xgboost(booster, initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))])
    except Exception as exc:  # the converter raises bare RuntimeError/TypeError/ValueError
        raise ModelError(f"ONNX conversion failed: {exc}") from exc
    spec = spec_of(booster)
    if spec is not None:
        _add_margin(model, spec["column"], spec["factor"], _base_score(booster, n_features))
    floor = floor_spec_of(booster)
    if floor is not None:
        _add_floor(model, floor["column"], floor["factor"])
    return model.SerializeToString()


def _base_score(booster: Any, n_features: int) -> float:
    """What the tree ensemble adds when no margin is given (XGBoost's base score), exactly as the
    booster computes it: the difference of two predictions of one row with and without margin 0."""
    import xgboost as xgb

    row = np.zeros((1, n_features), dtype=np.float32)
    plain = booster.predict(xgb.DMatrix(row))[0]
    zero_margin = booster.predict(xgb.DMatrix(row, base_margin=np.zeros(1)))[0]
    return float(plain) - float(zero_margin)


def _add_margin(model: Any, column: int, factor: float, base_score: float) -> None:
    """Append ``+ log1p(max(x[:, column], 0) × factor) - base_score`` to the ensemble's output: the
    graph then predicts what the booster predicts with its training margin."""
    from onnx import TensorProto, helper

    graph = model.graph
    trees = f"{graph.output[0].name}_trees"
    out = _rename_output(graph, trees)
    margin = _log1p_scaled(graph, "margin", column, factor)
    graph.initializer.append(helper.make_tensor("margin_base", TensorProto.FLOAT, [], [float(base_score)]))
    graph.node.extend([
        helper.make_node("Sub", [margin, "margin_base"], ["margin_shift"]),
        helper.make_node("Add", [trees, "margin_shift"], [out]),
    ])
    _need_opset_13(model)


def _log1p_scaled(graph: Any, prefix: str, column: int, factor: float) -> str:
    """Nodes computing ``log1p(max(x[:, column], 0) × factor)``; returns the name of their output."""
    from onnx import TensorProto, helper

    graph.initializer.extend([
        helper.make_tensor(f"{prefix}_column", TensorProto.INT64, [1], [int(column)]),
        helper.make_tensor(f"{prefix}_factor", TensorProto.FLOAT, [], [float(factor)]),
        helper.make_tensor(f"{prefix}_one", TensorProto.FLOAT, [], [1.0]),
    ])
    graph.node.extend([
        helper.make_node("Gather", [graph.input[0].name, f"{prefix}_column"], [f"{prefix}_x"], axis=1),
        helper.make_node("Relu", [f"{prefix}_x"], [f"{prefix}_pos"]),
        helper.make_node("Mul", [f"{prefix}_pos", f"{prefix}_factor"], [f"{prefix}_scaled"]),
        helper.make_node("Add", [f"{prefix}_scaled", f"{prefix}_one"], [f"{prefix}_plus1"]),
        helper.make_node("Log", [f"{prefix}_plus1"], [f"{prefix}_log1p"]),
    ])
    return f"{prefix}_log1p"


def _rename_output(graph: Any, new_name: str) -> str:
    """Let the nodes that wrote the graph's output write ``new_name`` instead; returns the output's name."""
    out = graph.output[0].name
    for node in graph.node:
        node.output[:] = [new_name if name == out else name for name in node.output]
    return out


def _need_opset_13(model: Any) -> None:
    """The default domain at opset ≥ 13 (Gather, Relu, Max, …), declared once."""
    from onnx import helper

    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            op.version = max(op.version, 13)
            return
    model.opset_import.extend([helper.make_opsetid("", 13)])


def _add_floor(model: Any, column: int, factor: float) -> None:
    """Append ``max(output, log1p(max(x[:, column], 0) × factor))`` (models/latency/residual.py)."""
    from onnx import helper

    graph = model.graph
    out = _rename_output(graph, f"{graph.output[0].name}_unfloored")
    floor = _log1p_scaled(graph, "floor", column, factor)
    graph.node.append(helper.make_node("Max", [f"{out}_unfloored", floor], [out]))
    _need_opset_13(model)


def _session(data: bytes, what: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the worker scores small batches; threads would only add latency
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/… (no common base)
        raise ModelError(f"{what} is not a valid ONNX model: {exc}") from exc
    inputs = session.get_inputs()
    if len(inputs) != 1 or inputs[0].shape[-1] not in (len(FEATURE_NAMES), None, "None"):
        raise ModelError(f"{what}: expected one input of {len(FEATURE_NAMES)} features, "
                         f"got {[(i.name, i.shape) for i in inputs]}")
    return session


def _run(session: Any, X: np.ndarray, input_name: str | None = None) -> np.ndarray:
    """Raw model output (log1p of latency ms), float64 [n]."""
    name = input_name or session.get_inputs()[0].name  # get_inputs() costs µs: callers in a loop pass the name
    return session.run(None, {name: X})[0].reshape(-1).astype(np.float64)


def _to_ms(raw: np.ndarray, target: str) -> np.ndarray:
    if target == "log1p":
        return np.maximum(np.expm1(raw), 0.0)
    if target == "identity":
        return np.maximum(raw, 0.0)
    raise ModelError(f"unknown target transform {target!r}")


def parity(booster: Any, onnx_bytes: bytes, X: np.ndarray, target: str = "log1p") -> float:
    """Max relative difference (in ms) between ONNX and native predictions over the rows ``X``."""

    X = np.ascontiguousarray(X, dtype=np.float32)
    if len(X) == 0:
        return 0.0
    native = _to_ms(raw_predict(booster, X), target)
    onnx = _to_ms(_run(_session(onnx_bytes, "exported model"), X), target)
    return float(np.max(np.abs(onnx - native) / np.maximum(np.abs(native), _FLOOR_MS)))


def export(boosters: Mapping[str, Any], X_check: np.ndarray, target: str = "log1p",
           tolerance: float = PARITY_TOLERANCE) -> tuple[dict[str, bytes], dict[str, float]]:
    """Convert each booster (``{"p50": …, "p95": …}``) and check it against native predictions on
    ``X_check``. Returns ``(onnx bytes by name, max relative difference by name)``; raises
    :class:`ParityError` when any difference exceeds ``tolerance`` (nothing is returned then)."""
    blobs, diffs = {}, {}
    for name, booster in boosters.items():
        blobs[name] = to_onnx(booster)
        diffs[name] = parity(booster, blobs[name], X_check, target)
        if not diffs[name] <= tolerance:  # also refuses NaN
            raise ParityError(f"ONNX export of {name} differs from the native model by {diffs[name]:.3g} "
                              f"(relative, max over {len(X_check)} rows; tolerance {tolerance:g}): refused")
    return blobs, diffs


def check_compatible(metadata: Mapping[str, Any], what: str = "model") -> None:
    """Refuse metadata whose features are not the ones this code computes."""
    names, version = tuple(metadata.get("feature_names") or ()), metadata.get("feature_version")
    if version != FEATURE_VERSION:
        raise ModelError(f"{what} was trained on feature version {version}, this code computes version "
                         f"{FEATURE_VERSION}: incompatible, refused")
    if names != FEATURE_NAMES:
        missing = [n for n in FEATURE_NAMES if n not in names]
        extra = [n for n in names if n not in FEATURE_NAMES]
        raise ModelError(f"{what} expects other features (missing {missing}, unknown {extra}, or another "
                         "order): incompatible, refused")


class LatencyModel:
    """P50 and P95 latency predictions from two ONNX sessions (one thread each)."""

    def __init__(self, p50: bytes, p95: bytes, metadata: Mapping[str, Any] | None = None) -> None:
        """From serialized ONNX models; ``metadata`` (as in ``metadata.json``) is checked for
        compatibility when given. Raises :class:`ModelError` for bytes that are not a model."""
        meta = dict(metadata or {"feature_names": list(FEATURE_NAMES), "feature_version": FEATURE_VERSION})
        version = str(meta.get("version", "unregistered"))
        check_compatible(meta, f"model {version}")
        self.metadata = meta
        self.version = version
        self.feature_names: tuple[str, ...] = tuple(meta["feature_names"])
        self.feature_version: int = int(meta["feature_version"])
        self.target: str = str(meta.get("target", "log1p"))
        _to_ms(np.zeros(1), self.target)  # an unknown target is refused now, not at the first predict
        self._sessions = {"p50": _session(p50, f"{version}/p50.onnx"), "p95": _session(p95, f"{version}/p95.onnx")}
        self._input = {k: s.get_inputs()[0].name for k, s in self._sessions.items()}

    @classmethod
    def load(cls, directory: str | Path) -> LatencyModel:
        """An artefact folder: ``metadata.json`` and the ONNX files it lists, checksums verified."""
        folder = Path(directory)
        try:
            meta = json.loads((folder / "metadata.json").read_text())
        except FileNotFoundError:
            raise ModelError(f"{folder}: no metadata.json, not a model artefact") from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"{folder}/metadata.json is unreadable: {exc}") from exc
        if not isinstance(meta, dict):
            raise ModelError(f"{folder}/metadata.json is not an object")
        check_compatible(meta, f"model {meta.get('version', folder.name)}")
        files = meta.get("files") or {}
        blobs = {}
        for name, filename in FILES.items():
            path = folder / filename
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ModelError(f"{path}: cannot read: {exc}") from exc
            expected = (files.get(filename) or {}).get("sha256")
            if expected is None:
                raise ModelError(f"{folder}/metadata.json has no checksum for {filename}: refused")
            if sha256(data) != expected:
                raise ModelError(f"{path}: checksum mismatch (sha256 {sha256(data)[:12]}…, metadata says "
                                 f"{expected[:12]}…): the file is corrupt or was replaced, refused")
            blobs[name] = data
        return cls(blobs["p50"], blobs["p95"], meta)

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(p50, p95)`` in ms, float64 [n] each, for rows in ``FEATURE_NAMES`` order; P95 ≥ P50."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        if X.ndim != 2 or X.shape[1] != len(self.feature_names):
            raise ValueError(f"expected rows of {len(self.feature_names)} features, got shape {X.shape}")
        if len(X) == 0:
            return np.zeros(0), np.zeros(0)
        p50 = _to_ms(_run(self._sessions["p50"], X, self._input["p50"]), self.target)
        p95 = np.maximum(_to_ms(_run(self._sessions["p95"], X, self._input["p95"]), self.target), p50)
        return p50, p95

    def __repr__(self) -> str:
        return f"LatencyModel(version={self.version!r}, features={len(self.feature_names)})"
