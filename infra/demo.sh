#!/usr/bin/env bash
# `make up`: one endpoint in front of two MCP servers, on this machine.
# Starts the bundled conformance fixture (HTTP, port 9101) and the proxy
# (http://127.0.0.1:8080/mcp) fronting it and the stdio server mcp-server-time.
# Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
"$BIN/only1mcp" fixture conformance --port 9101 &
FIXTURE=$!
trap 'kill $FIXTURE 2>/dev/null; wait $FIXTURE 2>/dev/null' EXIT
# The proxy would wait for it anyway (it retries with backoff); waiting here keeps the log quiet.
"$BIN/python" - <<'PY'
import socket, time
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", 9101), timeout=0.5).close()
        break
    except OSError:
        time.sleep(0.1)
PY
echo "Only1MCP: MCP endpoint at http://127.0.0.1:8080/mcp (config: examples/demo.toml); Ctrl-C stops"
"$BIN/only1mcp" proxy --config examples/demo.toml
