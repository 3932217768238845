"""The MCP conformance suite passes through the proxy exactly as it does against the fixture.

The conformance fixture is put behind ``only1mcp proxy`` with ``namespace = ""``, so
the suite sees the fixture's own tool, prompt and resource names, and
``infra/conformance/run.sh`` (``@modelcontextprotocol/conformance`` 0.1.16) runs
every scenario (``--suite all``) against the proxy's ``/mcp``. Every scenario then
exercises a relay: tool results of every content type, logging, progress, sampling and
elicitation in mid-call, resources and templates, prompts, completion, concurrent SSE
streams, the proxy's own DNS-rebinding (Origin) checks, and the two pending scenarios:
JSON Schema 2020-12 keywords kept in a listed tool, and ``server-sse-polling`` (the
proxy's priming event and retry field; the fixture's ``test_reconnection`` ends its
upstream stream mid-call, and the proxy resumes it with ``Last-Event-ID`` so the answer
still reaches the client). All 32 scenarios pass, no baseline: 46 SUCCESS checks.

Skipped only when the suite's Node is not installed (``infra/conformance/install.sh``).
"""

from __future__ import annotations

from pathlib import Path

from _conformance import assert_all_passed, requires_suite, run_suite

pytestmark = requires_suite


def test_proxy_passes_every_conformance_check(stack, tmp_path: Path) -> None:  # noqa: ANN001 - conftest fixture
    fixture_url, _ = stack.fixture("conformance")
    proxy_url, proxy = stack.proxy(f"""
        [[servers]]
        name = "conformance"
        namespace = ""
        [[servers.replicas]]
        url = "{fixture_url}"
    """)
    proc, checks = run_suite(proxy_url, tmp_path / "results")
    assert proxy.alive(), proxy.log_tail(20)
    assert_all_passed(proc, checks)
