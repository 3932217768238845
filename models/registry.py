"""The model registry: versioned latency artefacts on disk, and the gate that decides which one is live.

Layout under ``root`` (``[learning] registry_dir``, default ``<[store] data_dir>/models``)::

    latency-20261130T231500Z-1a2b3c4d/   one folder per version, never rewritten except metadata.json
        p50.onnx  p95.onnx               the quantile models (ONNX, see models/latency/onnx.py)
        holdout.npz                      the hold-out rows (X, y, ts): the gate re-scores on them
        metadata.json                    kind, version, created, features + FEATURE_VERSION, training
                                         window, rows, metrics and baseline metrics, sizes, sha256
                                         checksums, training params, parity, status (+ reason)
        report.html  report.png          written by the training job
    latency-river-…/                     the online challenger (RiverLatency): state.bin instead of
                                         the ONNX files, same hold-out, metadata and gate
    LIVE                                 the live version's name (one line)
    SHADOW                               the shadow version's name, if any
    history.json                         the stack of versions that were live, and every action

Why the gate re-scores: a candidate's own metrics were computed on *its* hold-out; the live
model's on another. Comparing those compares the data as much as the models. So the candidate, the
EWMA baseline and the current live model are all scored here, on the candidate's stored hold-out,
and the candidate is promoted only when its P50 MAE *and* P95 pinball loss beat both. (If the live
model was trained on data that overlaps that hold-out it has an unfair advantage, which errs on the
side of keeping it.) "Beat" means clearly: the mean per-call difference of each metric must be below
zero with 95 % confidence (``metrics.paired_upper``: batch means over 10 time blocks of the
hold-out), so a model never goes live, or replaces another, on a win the hold-out's noise could
have made. A candidate that fails any integrity check (checksum, feature version,
unreadable file) is refused before any metric is looked at.

Every write is a temp file (or temp folder) then a rename, so a reader sees the old state or the
new, never half; one writer at a time is assumed (the training job or the CLI).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from only1mcp.models.errors import ModelError
from only1mcp.models.latency.features import EWMA_FEATURE, FEATURE_NAMES, FEATURE_VERSION
from only1mcp.models.latency.metrics import paired_upper, quantile_metrics, row_losses
from only1mcp.models.latency.onnx import FILES, LatencyModel, check_compatible, sha256

__all__ = ["ModelRegistry", "ModelEntry", "GateVerdict", "ModelError", "gate", "STATUSES", "GATE_METRICS", "HOLDOUT_FILE",
           "HOLDOUT_MAX_ROWS", "RIVER_FILE"]

log = logging.getLogger("only1mcp.models.registry")

STATUSES = ("candidate", "live", "shadow", "retired", "refused")
GATE_METRICS = ("mae_p50", "pinball_95")  # both must be strictly lower than the baseline's and the live model's
HOLDOUT_FILE = "holdout.npz"
HOLDOUT_MAX_ROWS = 50_000  # ≈ 4 MB of float32 features at most; larger hold-outs are thinned evenly
_KIND = "latency"
_RIVER_KIND = "latency-river"  # the online challenger: RiverLatency state instead of ONNX
RIVER_FILE = "state.bin"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _metrics(y: np.ndarray, p50: np.ndarray, p95: np.ndarray) -> dict[str, float]:
    return quantile_metrics(y, p50, p95)


def _evidence(losses: Mapping[str, np.ndarray], rival: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per gate metric: the mean per-call difference candidate − rival and its 95 % upper bound
    (None: too few calls to bound it)."""
    out = {}
    for metric in GATE_METRICS:
        mean, upper = paired_upper(losses[metric], rival[metric])
        out[metric] = {"mean_diff": mean, "upper": upper if math.isfinite(upper) else None}
    return out


def gate(candidate: Mapping[str, float], baseline: Mapping[str, float],
         live: Mapping[str, float] | None,
         evidence: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None) -> tuple[bool, str]:
    """Whether ``candidate`` beats ``baseline`` and ``live`` (None: no live model) on every
    ``GATE_METRICS`` (lower is better, ties lose), and why — usable for any predictor (the river
    challenger goes through the same rule). With ``evidence`` (rival ``baseline`` / ``live`` →
    metric → ``upper``, the bound of :func:`paired_upper`), a lower metric wins only when its
    bound is below zero too."""
    failures, wins = [], []
    for key, rival_name, rival in (("baseline", "baseline", baseline), ("live", "live model", live)):
        if rival is None:
            continue
        for metric in GATE_METRICS:
            c, r = float(candidate[metric]), float(rival[metric])
            line = f"{metric} {c:.4g} {'<' if c < r else '≥'} {rival_name} {r:.4g}"
            judged = (evidence or {}).get(key)
            upper = (judged or {}).get(metric, {}).get("upper")
            if c < r and judged is not None and (upper is None or not upper < 0):
                bound = "too few calls to tell" if upper is None else f"{upper:+.3g} ms"
                failures.append(f"{line} but not clearly (95 % bound of the per-call difference: {bound})")
                continue
            if c < r and upper is not None:
                line += f" (per call by ≥ {-upper:.3g} ms, 95 %)"
            (wins if c < r else failures).append(line)
    if failures:
        return False, "does not beat: " + "; ".join(failures)
    return True, "beats: " + "; ".join(wins)


@dataclass(frozen=True)
class ModelEntry:
    """One registered version: its folder and its metadata (as read)."""

    version: str
    path: Path
    metadata: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.metadata.get("status", "candidate"))

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        return self.metadata.get("metrics", {})

    def to_dict(self) -> dict[str, Any]:
        return {**self.metadata, "path": str(self.path)}


@dataclass(frozen=True)
class GateVerdict:
    """The gate's answer for one promotion attempt."""

    version: str
    promoted: bool
    reason: str
    scores: dict[str, Any] = field(default_factory=dict)  # "candidate"/"baseline"/"live" metrics on the hold-out
    previous: str | None = None  # the live version before (when promoted)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "promoted": self.promoted, "reason": self.reason,
                "scores": self.scores, "previous": self.previous}


class ModelRegistry:
    """Versioned latency models under ``root``; see the module docstring for the layout and rules."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # -- paths and small files ----------------------------------------------------------------

    def _dir(self, version: str) -> Path:
        if not version or "/" in version or version.startswith(".") or version in ("LIVE", "SHADOW"):
            raise ModelError(f"not a version name: {version!r}")
        path = self.root / version
        if not (path / "metadata.json").is_file():
            raise ModelError(f"no model version {version!r} in {self.root}")
        return path

    def _read_pointer(self, name: str) -> str | None:
        try:
            text = (self.root / name).read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def _write_pointer(self, name: str, version: str | None) -> None:
        _write_atomic(self.root / name, ((version or "") + "\n").encode())

    def _history(self) -> dict[str, Any]:
        try:
            data = json.loads((self.root / "history.json").read_text())
        except FileNotFoundError:
            return {"live": [], "events": []}
        except ValueError as exc:
            raise ModelError(f"{self.root}/history.json is unreadable: {exc}") from exc
        return {"live": list(data.get("live", [])), "events": list(data.get("events", []))}

    def _record(self, history: dict[str, Any], action: str, version: str | None, reason: str = "") -> None:
        history["events"].append({"ts": round(time.time(), 3), "action": action, "version": version,
                                  "reason": reason})
        history["events"] = history["events"][-1000:]
        _write_atomic(self.root / "history.json", _json_bytes(history))

    def _set_status(self, version: str, status: str, reason: str | None = None) -> None:
        assert status in STATUSES, status
        path = self._dir(version) / "metadata.json"
        meta = json.loads(path.read_text())
        meta["status"] = status
        meta["status_reason"] = reason
        meta["status_changed"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        _write_atomic(path, _json_bytes(meta))

    # -- adding --------------------------------------------------------------------------------

    def _new_version(self, kind: str, digest: str, created: datetime) -> str:
        version = f"{kind}-{created:%Y%m%dT%H%M%SZ}-{digest[:8]}"
        suffix = 1
        while (self.root / version).exists():
            suffix += 1
            version = f"{kind}-{created:%Y%m%dT%H%M%SZ}-{digest[:8]}-{suffix}"
        return version

    @staticmethod
    def _holdout_bytes(X: np.ndarray, y: np.ndarray, ts: np.ndarray) -> tuple[bytes, int]:
        if len(y) > HOLDOUT_MAX_ROWS:
            keep = np.linspace(0, len(y) - 1, HOLDOUT_MAX_ROWS).astype(int)
            X, y, ts = X[keep], y[keep], ts[keep]
        buffer = io.BytesIO()
        np.savez_compressed(buffer, X=np.asarray(X, dtype=np.float32), y=np.asarray(y, dtype=np.float64),
                            ts=np.asarray(ts, dtype=np.float64))
        return buffer.getvalue(), int(len(y))

    def _write_version(self, version: str, files: Mapping[str, bytes], metadata: dict[str, Any]) -> str:
        """Stage the folder under a temp name, fsync, rename: it appears whole or not at all."""
        metadata["files"] = {name: {"sha256": sha256(data), "bytes": len(data)} for name, data in files.items()}
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{version}."))
        try:
            for name, data in files.items():
                (staging / name).write_bytes(data)
            (staging / "metadata.json").write_bytes(_json_bytes(metadata))
            for path in staging.iterdir():
                with open(path, "rb") as fh:
                    os.fsync(fh.fileno())
            os.rename(staging, self.root / version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(self.root)
        self._record(self._history(), "add", version)
        log.info("registered %s model %s (%s rows)", metadata["kind"], version, metadata.get("rows"))
        return version

    def add(self, result: Any, onnx: Mapping[str, bytes | str | Path], window: Mapping[str, Any] | None = None,
            *, parity: Mapping[str, float] | None = None, extra: Mapping[str, Any] | None = None) -> str:
        """Register a trained result (models.latency.train.TrainResult) with its ONNX models
        (``{"p50": bytes | path, "p95": …}``) as a new *candidate*; returns its version.

        ``window`` is the requested training window (``since``/``until``, unix seconds or None);
        ``extra`` is merged into the metadata (e.g. the job's timings)."""
        blobs = {name: (data if isinstance(data, bytes) else Path(data).read_bytes()) for name, data in onnx.items()}
        if set(blobs) != set(FILES):
            raise ModelError(f"expected ONNX models {sorted(FILES)}, got {sorted(blobs)}")
        created = datetime.now(timezone.utc)
        version = self._new_version(_KIND, sha256(blobs["p50"] + blobs["p95"]), created)
        holdout, stored = self._holdout_bytes(result.X_holdout, result.y_holdout, result.ts_holdout)
        files = {FILES["p50"]: blobs["p50"], FILES["p95"]: blobs["p95"], HOLDOUT_FILE: holdout}
        window = dict(window or {})
        metadata: dict[str, Any] = {
            "kind": _KIND,
            "version": version,
            "created": created.isoformat(timespec="milliseconds"),
            "status": "candidate",
            "status_reason": None,
            "feature_names": list(FEATURE_NAMES),
            "feature_version": FEATURE_VERSION,
            "target": getattr(result, "target", "log1p"),
            "window": {"since": window.get("since"), "until": window.get("until"),
                       "data_since": result.split["train_since"], "data_until": result.split["holdout_until"],
                       "holdout_since": result.split["holdout_since"]},
            "rows": dict(result.rows),
            "metrics": result.metrics,
            "improvement": result.improvement,
            "baseline_p95_factor": result.baseline_p95_factor,
            "p50_floor_factor": getattr(result, "p50_floor_factor", None),
            "params": {k: v for k, v in result.params.items()},
            "rounds": dict(result.rounds),
            "parity": dict(parity or {}),
            "feature_importance": result.feature_importance,
            "holdout_rows_stored": stored,
            **dict(extra or {}),
        }
        return self._write_version(version, files, metadata)

    def add_online(self, model: Any, X_holdout: np.ndarray, y_holdout: np.ndarray, ts_holdout: np.ndarray,
                   *, baseline_p95_factor: float | None = None, extra: Mapping[str, Any] | None = None) -> str:
        """Register the river challenger (models.latency.online.RiverLatency) as a *candidate*, with
        the calls it is to be judged on (rows it has **not** learned from yet: score, then learn),
        so it reaches live only through the same gate as a trained model.

        The EWMA baseline's P95 factor should come from calls before the hold-out; without one it
        is fitted on the hold-out itself, which can only flatter the baseline (the gate errs on
        the side of refusing the challenger)."""
        from only1mcp.models.latency.features import LAST_FEATURE

        state = model.to_bytes()
        X = np.asarray(X_holdout, dtype=np.float32)
        y, ts = np.asarray(y_holdout, dtype=np.float64), np.asarray(ts_holdout, dtype=np.float64)
        if len(y) < 20 or X.shape != (len(y), len(FEATURE_NAMES)) or len(ts) != len(y):
            raise ModelError(f"a hold-out of at least 20 rows of {len(FEATURE_NAMES)} features is needed, "
                             f"got X {X.shape}, y {y.shape}")
        metrics = {"model": _metrics(y, *model.predict(X))}
        ewma = X[:, FEATURE_NAMES.index(EWMA_FEATURE)].astype(np.float64)
        warm = ewma > 0
        if baseline_p95_factor is None:
            baseline_p95_factor = float(np.quantile(y[warm] / ewma[warm], 0.95)) if warm.any() else 1.0
        metrics["ewma"] = _metrics(y, ewma, ewma * baseline_p95_factor)
        last = X[:, FEATURE_NAMES.index(LAST_FEATURE)].astype(np.float64)
        metrics["last_value"] = _metrics(y, last, last * baseline_p95_factor)
        created = datetime.now(timezone.utc)
        version = self._new_version(_RIVER_KIND, sha256(state), created)
        holdout, stored = self._holdout_bytes(X, y, ts)
        metadata: dict[str, Any] = {
            "kind": _RIVER_KIND,
            "version": version,
            "created": created.isoformat(timespec="milliseconds"),
            "status": "candidate",
            "status_reason": None,
            "feature_names": list(FEATURE_NAMES),
            "feature_version": FEATURE_VERSION,
            "window": {"data_since": None, "data_until": float(ts.max()), "holdout_since": float(ts.min())},
            "rows": {"train": int(getattr(model, "n", 0)), "validation": 0, "holdout": int(len(y))},
            "metrics": metrics,
            "improvement": {"mae_p50_vs_ewma": 1.0 - metrics["model"]["mae_p50"] / metrics["ewma"]["mae_p50"]
                            if metrics["ewma"]["mae_p50"] else 0.0},
            "baseline_p95_factor": {"ewma": baseline_p95_factor, "last_value": baseline_p95_factor},
            "params": {"lr": getattr(model, "lr", None), "window": getattr(model, "window", None)},
            "holdout_rows_stored": stored,
            **dict(extra or {}),
        }
        return self._write_version(version, {RIVER_FILE: state, HOLDOUT_FILE: holdout}, metadata)

    def write_file(self, version: str, name: str, data: bytes) -> Path:
        """Add a side file (a report) to a version's folder, atomically; model files are refused."""
        if name in (*FILES.values(), HOLDOUT_FILE, RIVER_FILE, "metadata.json") or "/" in name:
            raise ModelError(f"{name!r} cannot be replaced")
        path = self._dir(version) / name
        _write_atomic(path, data)
        return path

    # -- reading -------------------------------------------------------------------------------

    def list(self) -> list[ModelEntry]:
        """Every version, oldest first; unreadable folders are skipped (and logged)."""
        entries = []
        if not self.root.is_dir():
            return entries
        for path in sorted(self.root.iterdir()):
            if not path.is_dir() or path.name.startswith(".") or not (path / "metadata.json").is_file():
                continue
            try:
                entries.append(ModelEntry(path.name, path, json.loads((path / "metadata.json").read_text())))
            except (OSError, ValueError) as exc:
                log.warning("skipping %s: unreadable metadata.json: %s", path, exc)
        return sorted(entries, key=lambda e: (str(e.metadata.get("created", "")), e.version))

    def show(self, version: str) -> ModelEntry:
        path = self._dir(version)
        try:
            meta = json.loads((path / "metadata.json").read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}/metadata.json is unreadable: {exc}") from exc
        return ModelEntry(version, path, meta)

    def live(self) -> ModelEntry | None:
        version = self._read_pointer("LIVE")
        return self.show(version) if version else None

    def shadow(self) -> ModelEntry | None:
        version = self._read_pointer("SHADOW")
        return self.show(version) if version else None

    def history(self) -> list[dict[str, Any]]:
        return self._history()["events"]

    def load(self, version: str) -> Any:
        """A version's predictor, every check applied (checksums, features); ModelError otherwise:
        a :class:`LatencyModel` (ONNX), or a ``RiverLatency`` for the online challenger's versions.
        Either answers ``predict(X) -> (p50, p95)`` and has ``.version``."""
        folder = self._dir(version)
        meta = self.show(version).metadata
        if meta.get("kind", _KIND) == _KIND:
            return LatencyModel.load(folder)
        if meta.get("kind") != _RIVER_KIND:
            raise ModelError(f"{version}: unknown model kind {meta.get('kind')!r}, refused")
        check_compatible(meta, f"model {version}")
        from only1mcp.models.latency.online import RiverLatency

        try:
            data = (folder / RIVER_FILE).read_bytes()
        except OSError as exc:
            raise ModelError(f"{folder / RIVER_FILE}: cannot read: {exc}") from exc
        expected = meta.get("files", {}).get(RIVER_FILE, {}).get("sha256")
        if expected != sha256(data):
            raise ModelError(f"{folder / RIVER_FILE}: checksum mismatch: the file is corrupt or was replaced, refused")
        model = RiverLatency.from_bytes(data)
        model.version = version
        return model

    def load_live(self) -> Any:
        """The live predictor (see :meth:`load`), or None when nothing is live. A corrupt or incompatible artefact raises
        :class:`ModelError` (and is logged): the caller keeps serving with the model it has."""
        version = self._read_pointer("LIVE")
        if version is None:
            return None
        try:
            return self.load(version)
        except ModelError as exc:
            log.error("live model %s refused: %s", version, exc)
            raise

    def holdout(self, version: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The stored hold-out ``(X, y, ts)`` of a version, checksum verified."""
        path = self._dir(version) / HOLDOUT_FILE
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{path}: cannot read the hold-out: {exc}") from exc
        expected = self.show(version).metadata.get("files", {}).get(HOLDOUT_FILE, {}).get("sha256")
        if expected != sha256(data):
            raise ModelError(f"{path}: checksum mismatch: the hold-out is corrupt, refused")
        import io

        with np.load(io.BytesIO(data)) as npz:
            return npz["X"], npz["y"], npz["ts"]

    # -- changing what is live -----------------------------------------------------------------

    def score(self, version: str, model: Any | None = None) -> dict[str, Any]:
        """Metrics on ``version``'s hold-out of: the candidate, the EWMA baseline and — when there is
        one — the live model (or ``model``, any object with ``predict(X) -> (p50, p95)``)."""
        entry = self.show(version)
        X, y, ts = self.holdout(version)
        candidate = model if model is not None else self.load(version)
        order = np.argsort(ts, kind="stable")  # the evidence's blocks are stretches of time
        X, y = X[order], y[order]
        predicted = candidate.predict(X)
        scores: dict[str, Any] = {"rows": int(len(y)), "candidate": _metrics(y, *predicted)}
        losses = row_losses(y, *predicted)
        ewma = X[:, FEATURE_NAMES.index(EWMA_FEATURE)].astype(np.float64)
        factor = float(entry.metadata.get("baseline_p95_factor", {}).get("ewma", 1.0))
        scores["baseline"] = _metrics(y, ewma, ewma * factor)
        scores["evidence"] = {"baseline": _evidence(losses, row_losses(y, ewma, ewma * factor))}
        live_version = self._read_pointer("LIVE")
        if live_version and live_version != version:
            try:
                live = self.load(live_version).predict(X)
                scores["live"] = {"version": live_version, **_metrics(y, *live)}
                scores["evidence"]["live"] = _evidence(losses, row_losses(y, *live))
            except ModelError as exc:
                log.warning("live model %s cannot be scored, the gate compares with the baseline only: %s",
                            live_version, exc)
                scores["live"] = {"version": live_version, "error": str(exc)}
        return scores

    def promote(self, version: str, force: bool = False) -> GateVerdict:
        """Make ``version`` live if it passes the gate (see the module docstring); ``force`` skips
        the metric comparison but never the integrity checks. A refusal is recorded in the
        version's status and the history and returned (not raised); an artefact that does not
        load raises :class:`ModelError` and nothing changes."""
        entry = self.show(version)
        check_compatible(entry.metadata, f"model {version}")
        current = self._read_pointer("LIVE")
        if current == version:
            return GateVerdict(version, False, "already live", previous=current)
        model = self.load(version)  # checksums, ONNX validity, features: refuse before anything else
        history = self._history()
        try:
            scores = self.score(version, model)
        except ModelError as exc:
            if not force:
                reason = f"cannot be judged: {exc}"
                self._set_status(version, "refused", reason)
                self._record(history, "refuse", version, reason)
                return GateVerdict(version, False, reason)
            scores = {"error": str(exc)}
        if force:
            ok, reason = True, "forced (gate skipped)"
        else:
            live = scores.get("live")
            usable_live = live if live is not None and "error" not in live else None
            ok, reason = gate(scores["candidate"], scores["baseline"], usable_live, scores.get("evidence"))
            if live is not None and usable_live is None:
                reason += f" (live model {live['version']} could not be scored: {live['error']})"
        if not ok:
            self._set_status(version, "refused", reason)
            self._record(history, "refuse", version, reason)
            log.info("gate refused %s: %s", version, reason)
            return GateVerdict(version, False, reason, scores, current)
        stack = [v for v in history["live"] if v != version]
        stack.append(version)
        history["live"] = stack[-100:]
        self._record(history, "promote", version, reason)
        self._write_pointer("LIVE", version)
        self._set_status(version, "live", reason)
        if current:
            try:
                self._set_status(current, "retired", f"replaced by {version}")
            except ModelError:
                pass  # the folder of the old live model is gone; nothing to mark
        if self._read_pointer("SHADOW") == version:
            self._write_pointer("SHADOW", None)
        log.info("promoted %s (previously %s): %s", version, current, reason)
        return GateVerdict(version, True, reason, scores, current)

    def rollback(self, reason: str = "rollback") -> str:
        """Make the previously live version live again; returns it. The version rolled back from
        becomes *retired*. Raises :class:`ModelError` when there is no previous version or it does
        not load (then nothing changes)."""
        history = self._history()
        current = self._read_pointer("LIVE")
        stack = list(history["live"])
        while stack and stack[-1] == current:
            stack.pop()
        if not stack:
            raise ModelError("no previous live model to roll back to")
        previous = stack[-1]
        self.load(previous)  # refuse a corrupt or incompatible previous model before switching
        history["live"] = stack
        self._record(history, "rollback", previous, f"{reason}: from {current}")
        self._write_pointer("LIVE", previous)
        self._set_status(previous, "live", f"{reason} from {current}")
        if current:
            try:
                self._set_status(current, "retired", reason)
            except ModelError:
                pass
        log.warning("rolled back from %s to %s (%s)", current, previous, reason)
        return previous

    def set_shadow(self, version: str | None) -> None:
        """Score ``version`` beside the live model (not acted on); None clears the shadow."""
        history = self._history()
        old = self._read_pointer("SHADOW")
        if version is not None:
            self.load(version)  # a shadow that cannot load would only log errors
            if version == self._read_pointer("LIVE"):
                raise ModelError(f"{version} is live, it cannot also be the shadow")
        self._write_pointer("SHADOW", version)
        if old and old != version:
            try:
                if self.show(old).status == "shadow":
                    self._set_status(old, "candidate", "no longer the shadow")
            except ModelError:
                pass  # the old shadow's folder is gone: nothing to mark
        if version is not None:
            self._set_status(version, "shadow", "scored beside the live model")
        self._record(history, "shadow", version)
