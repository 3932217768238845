"""Next-tool model versions on disk, their hold-out score, and the gate that makes one live.

Layout under ``root`` (``<[learning] registry_dir or <data_dir>/models>/prefetch``; the latency
registry beside it never looks into this folder)::

    prefetch-20261201T143000Z-1a2b3c4d/
        model.json          NextToolModel.state() (JSON)
        holdout.json        the hold-out: per session, {"tools": [...], "start": i}: the calls from index i on
                            are scored, those before are their context (at most HOLDOUT_MAX_CALLS calls)
        metadata.json       kind, version, created, order, training window, sessions and calls, metrics of the
                            model and of the baselines (order-1 Markov, most frequent tool) and the oracle,
                            files (sha256, bytes), status (+ reason)
    LIVE                    the live version's name
    history.json            every add / promote / refuse

The gate re-scores the candidate and the live model on the candidate's own hold-out (the newest
calls, never used for training or tuning): the candidate becomes live when its top-1 accuracy is
at least the order-1 Markov baseline's and the live model's (a tie promotes: newer data wins) and
strictly above the most-frequent-tool baseline's. A model whose checksum, JSON or state is wrong is
refused with the reason, whoever loads it (the gate, the worker).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from only1mcp.models.errors import ModelError
from only1mcp.models.latency.onnx import sha256
from only1mcp.models.prefetch import PrefetchStateError
from only1mcp.models.prefetch.markov import NextToolModel
from only1mcp.models.registry import _fsync_dir, _json_bytes, _write_atomic

__all__ = ["PrefetchRegistry", "prefetch_root", "score_sessions", "MODEL_FILE", "HOLDOUT_FILE", "HOLDOUT_MAX_CALLS",
           "KIND"]

log = logging.getLogger(__name__)

KIND = "prefetch"
MODEL_FILE, HOLDOUT_FILE = "model.json", "holdout.json"
HOLDOUT_MAX_CALLS = 200_000


def prefetch_root(registry_dir: str | Path) -> Path:
    """Where prefetch versions live inside a model registry folder."""
    return Path(registry_dir) / KIND


Scored = tuple[Sequence[str], int]  # a session's tools in call order, and the index of its first scored call


def score_sessions(model: Any, sessions: Sequence[Scored], k: int = 3) -> dict[str, float | int]:
    """Next-tool accuracy of ``model`` (``predict_one(history, k)``) over ``sessions``, frozen: every
    call from ``start`` on (never a session's first), predicted from the session's calls before it."""
    calls = top1 = topk = 0
    for tools, start in sessions:
        for i in range(max(1, start), len(tools)):
            predicted = [tool for tool, _ in model.predict_one(tools[:i], k)]
            calls += 1
            top1 += bool(predicted) and predicted[0] == tools[i]
            topk += tools[i] in predicted
    return {"calls": calls, "top1": top1 / calls if calls else 0.0, f"top{k}": topk / calls if calls else 0.0}


class PrefetchRegistry:
    """Versioned next-tool models under ``root`` (see the module doc)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _dir(self, version: str) -> Path:
        if not version or "/" in version or version.startswith(".") or version == "LIVE":
            raise ModelError(f"not a version name: {version!r}")
        path = self.root / version
        if not (path / "metadata.json").is_file():
            raise ModelError(f"no prefetch model version {version!r} in {self.root}")
        return path

    def _record(self, action: str, version: str, reason: str = "") -> None:
        path = self.root / "history.json"
        try:
            events = json.loads(path.read_text()).get("events", [])
        except (OSError, ValueError, AttributeError):
            events = []
        events.append({"ts": round(time.time(), 3), "action": action, "version": version, "reason": reason})
        _write_atomic(path, _json_bytes({"events": events[-1000:]}))

    def _set_status(self, version: str, status: str, reason: str) -> None:
        path = self._dir(version) / "metadata.json"
        meta = json.loads(path.read_text())
        meta.update(status=status, status_reason=reason,
                    status_changed=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        _write_atomic(path, _json_bytes(meta))

    def add(self, model: NextToolModel, holdout: Sequence[Scored], metadata: Mapping[str, Any]) -> str:
        """Register ``model`` as a *candidate* with its hold-out (``score_sessions``' input); returns its version."""
        state = json.dumps(model.state(), separators=(",", ":")).encode()
        kept, calls = [], 0
        for tools, start in reversed(holdout):  # the newest sessions first, up to the bound
            if calls + len(tools) > HOLDOUT_MAX_CALLS:
                break
            kept.append({"tools": list(tools), "start": int(start)})
            calls += len(tools)
        files = {MODEL_FILE: state, HOLDOUT_FILE: json.dumps(kept[::-1], separators=(",", ":")).encode()}
        created = datetime.now(timezone.utc)
        version = f"{KIND}-{created:%Y%m%dT%H%M%SZ}-{sha256(state)[:8]}"
        while (self.root / version).exists():
            version += "x"
        meta = {"kind": KIND, "version": version, "created": created.isoformat(timespec="milliseconds"),
                "status": "candidate", "status_reason": None, "model": model.name, "order": model.order,
                **dict(metadata), "holdout_sessions_stored": len(kept),
                "files": {name: {"sha256": sha256(data), "bytes": len(data)} for name, data in files.items()}}
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=f".{version}."))
        try:
            for name, data in {**files, "metadata.json": _json_bytes(meta)}.items():
                _write_atomic(staging / name, data)
            staging.rename(self.root / version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_dir(self.root)
        self._record("add", version)
        return version

    def show(self, version: str) -> dict[str, Any]:
        path = self._dir(version) / "metadata.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path} is unreadable: {exc}") from exc

    def live_version(self) -> str | None:
        try:
            return (self.root / "LIVE").read_text().strip() or None
        except FileNotFoundError:
            return None

    def _file(self, version: str, name: str) -> bytes:
        path = self._dir(version) / name
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ModelError(f"{path}: cannot read: {exc}") from exc
        expected = self.show(version).get("files", {}).get(name, {}).get("sha256")
        if expected != sha256(data):
            raise ModelError(f"{path}: checksum mismatch: the file is corrupt or was replaced, refused")
        return data

    def load(self, version: str) -> NextToolModel:
        """The version's model, every check applied; ModelError (saying which file and why) otherwise."""
        meta = self.show(version)
        if meta.get("kind") != KIND:
            raise ModelError(f"{version}: not a prefetch model (kind {meta.get('kind')!r}), refused")
        data = self._file(version, MODEL_FILE)
        try:
            return NextToolModel.from_state(json.loads(data))
        except ValueError as exc:  # not JSON, or a state the model refuses (PrefetchStateError)
            kind = "state" if isinstance(exc, PrefetchStateError) else "JSON"
            raise ModelError(f"{self.root / version / MODEL_FILE}: bad {kind}: {exc}, refused") from exc

    def load_live(self) -> tuple[NextToolModel, str] | None:
        """(the live model, its version), or None when nothing is live; ModelError when it is refused."""
        version = self.live_version()
        return None if version is None else (self.load(version), version)

    def holdout(self, version: str) -> list[Scored]:
        try:
            return [(list(map(str, s["tools"])), int(s["start"])) for s in json.loads(self._file(version, HOLDOUT_FILE))]
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelError(f"{version}: bad hold-out: {exc!r}") from exc

    def promote(self, version: str, force: bool = False) -> dict[str, Any]:
        """Run the gate (module doc); returns {version, promoted, reason, scores, previous}. A version
        that does not load raises ModelError and changes nothing."""
        meta, model = self.show(version), self.load(version)
        current = self.live_version()
        if current == version:
            return {"version": version, "promoted": False, "reason": "already live", "scores": {},
                    "previous": current}
        sessions = self.holdout(version)
        scores: dict[str, Any] = {"candidate": score_sessions(model, sessions)}
        baselines = meta.get("metrics", {})
        for name in ("markov1", "most_frequent"):
            if name in baselines:
                scores[name] = baselines[name]
        if current:
            try:
                scores["live"] = {"version": current, **score_sessions(self.load(current), sessions)}
            except ModelError as exc:
                scores["live"] = {"version": current, "error": str(exc)}
        top1 = scores["candidate"]["top1"]
        failures = [f"top-1 {top1:.4f} < {name} {scores[name]['top1']:.4f}" for name in ("markov1", "live")
                    if name in scores and "top1" in scores[name] and top1 < scores[name]["top1"]]
        if "most_frequent" in scores and top1 <= scores["most_frequent"]["top1"]:
            failures.append(f"top-1 {top1:.4f} ≤ most_frequent {scores['most_frequent']['top1']:.4f}")
        promoted = force or not failures
        reason = ("forced (gate skipped)" if force and failures else
                  "does not beat: " + "; ".join(failures) if failures else
                  f"top-1 {top1:.4f} ≥ every baseline" + (" and the live model" if "live" in scores else ""))
        if not promoted:
            self._set_status(version, "refused", reason)
            self._record("refuse", version, reason)
        else:
            _write_atomic(self.root / "LIVE", (version + "\n").encode())
            self._set_status(version, "live", reason)
            if current:
                try:
                    self._set_status(current, "retired", f"replaced by {version}")
                except ModelError:
                    pass
            self._record("promote", version, reason)
            log.info("prefetch model %s is live (previously %s): %s", version, current, reason)
        return {"version": version, "promoted": promoted, "reason": reason, "scores": scores, "previous": current}
