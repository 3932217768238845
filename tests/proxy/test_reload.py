"""Hot reload under load: a server added and removed by rewriting the configuration file, with
no failed call in flight — neither the steady load on another server nor a slow call on the
removed one, which finishes on its retired pool."""

from __future__ import annotations

import threading
import time

from tests.proxy._raw import RawClient


def _servers(conf_url: str, faults_url: str | None) -> str:
    text = f"""
[[servers]]
name = "conf"
[[servers.replicas]]
url = "{conf_url}"
"""
    if faults_url:
        text += f"""
[[servers]]
name = "faults"
[[servers.replicas]]
url = "{faults_url}"
"""
    return text


def test_add_and_remove_a_server_under_load(stack) -> None:  # noqa: ANN001
    conf_url, _ = stack.fixture("conformance")
    faults_url, _ = stack.fixture("faults")
    path, port = stack.write_config(_servers(conf_url, None))
    proxy = stack.start(f"proxy-{port}", [__import__("sys").executable, "-m", "only1mcp.cli", "proxy",
                                          "--config", str(path)])
    from tests.conftest import wait_port

    wait_port(port, proxy, timeout=30)
    url = f"http://127.0.0.1:{port}/mcp"
    failures: list[str] = []
    calls = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal calls
        with RawClient(url) as client:
            sid = client.initialize()
            while not stop.is_set():
                reply = client.call_tool(sid, "conf__test_simple_text", {})
                calls += 1
                if "result" not in reply:
                    failures.append(str(reply))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    with RawClient(url) as client:
        sid = client.initialize()
        path.write_text(path.read_text().split("[[servers]]")[0] + _servers(conf_url, faults_url))
        client.poll(lambda: "faults__echo" in client.tool_names(sid), timeout=15)
        assert client.call_tool(sid, "faults__echo", {"text": "hi"})["result"]["content"][0]["text"] == "hi"

        slow: dict[str, object] = {}
        slow_call = threading.Thread(target=lambda: slow.update(
            reply=client.call_tool(client.initialize(), "faults__sleep", {"seconds": 2})))
        slow_call.start()
        time.sleep(0.5)  # the slow call is in flight on the faults pool
        path.write_text(path.read_text().split("[[servers]]")[0] + _servers(conf_url, None))
        client.poll(lambda: "faults__echo" not in client.tool_names(sid), timeout=15)
        slow_call.join(timeout=15)
        assert slow["reply"]["result"]["content"][0]["text"] == "slept", slow  # type: ignore[index]
        gone = client.call_tool(sid, "faults__echo", {"text": "hi"})
        assert gone["error"]["code"] == -32602 and "Unknown tool" in gone["error"]["message"]
    stop.set()
    for worker in workers:
        worker.join(timeout=10)
    assert calls > 50 and failures == [], (calls, failures[:3])
