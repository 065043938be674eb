"""MCP tools in `env.kwargs.tools`: a real MCP server written with fastmcp in the test, reached through the mcp
package's client over stdio and over Streamable HTTP."""

import json
import socket
import subprocess
import sys
import textwrap
import time

import gymnasium as gym
import pytest

pytest.importorskip("fastmcp", reason="fastmcp (the test server) is part of the test extra")

import steprl.envs  # noqa: E402,F401
from steprl.envs.mcp_tools import parse_entry, resolve_tools  # noqa: E402
from steprl.envs.process_resources import SHARED  # noqa: E402
from steprl.envs.tools import ToolTimeout, get_tool  # noqa: E402

SERVER = textwrap.dedent('''
    import os
    import sys
    import time

    from fastmcp import FastMCP

    mcp = FastMCP("units")

    @mcp.tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @mcp.tool
    def total(values: list[int]) -> int:
        """Sum a list of integers."""
        return sum(values)

    @mcp.tool
    def refuse(reason: str) -> str:
        """Always fails."""
        raise ValueError(f"refused: {reason}")

    @mcp.tool
    def slow(seconds: float) -> str:
        """Sleep, then answer."""
        time.sleep(seconds)
        return "done"

    @mcp.tool
    def die() -> str:
        """End the server process."""
        os._exit(3)

    if __name__ == "__main__":
        if len(sys.argv) > 1:
            mcp.run(transport="http", host="127.0.0.1", port=int(sys.argv[1]), show_banner=False)
        else:
            mcp.run(show_banner=False)
''')


@pytest.fixture(scope="module")
def server_command(tmp_path_factory):
    """The server script's stdio command: one path for the module, so its tools keep one owner in the registry."""
    path = tmp_path_factory.mktemp("mcp") / "units_server.py"
    path.write_text(SERVER)
    return f"{sys.executable} {path}"


@pytest.fixture
def server(server_command):
    """The server's command; this process's connections closed after each test."""
    yield server_command
    SHARED.close_all()


@pytest.fixture
def qa(tmp_path):
    """A tiny QA file."""
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"question": f"What is {i} + {2 * i}?", "answer": str(3 * i)}) + "\n"
                            for i in range(1, 11)))
    return str(path)


def test_the_servers_tools_are_offered_described_and_called(server, qa):
    env = gym.make("steprl/QA-v0", path=qa, tools=[f"mcp:{server}"], format="hermes", max_turns=4)
    _, info = env.reset(seed=0)
    specs = {t["name"]: t for t in info["tools"]}
    assert set(specs) == {"add", "total", "refuse", "slow", "die"}
    assert specs["add"]["description"] == "Add two integers."
    assert specs["add"]["parameters"]["required"] == ["a", "b"]
    assert '"name": "total"' in info["system"]
    def call(name, args):
        return env.step(f'<tool_call>{{"name": "{name}", "arguments": {json.dumps(args)}}}</tool_call>')
    assert call("add", {"a": 20, "b": 22})[0] == "<tool_response>42</tool_response>"
    assert call("total", {"values": [1, 2, 3]})[0] == "<tool_response>6</tool_response>"
    obs, _, _, _, info = call("refuse", {"reason": "no"})
    assert "refused: no" in obs and obs.startswith("<tool_response>error:") and info["tool_errors"] == 1


def test_every_call_is_checked_against_the_tools_schema_before_it_reaches_the_server(server):
    (name,) = [n for n in resolve_tools([f"mcp:{server}"]) if n == "total"]
    tool = get_tool(name)
    from steprl.envs.tools import run_tool

    assert run_tool(tool, {"values": [1, "x"]}).text.startswith("error: values.1: 'x' is not of type 'integer'")
    assert run_tool(tool, {"values": 5}).text == "error: values: 5 is not of type 'array'"
    assert run_tool(get_tool("add"), {"a": 1}).text == "error: missing argument 'b' for add"
    assert run_tool(get_tool("add"), {"a": 1, "b": 2, "c": 3}).text == "error: unknown argument 'c' for add"


def test_a_call_past_its_time_limit_is_a_fault_not_an_observation(server, qa):
    env = gym.make("steprl/QA-v0", path=qa, tools=[{"mcp": server, "time_limit_s": 0.5}], max_turns=4)
    env.reset(seed=0)
    with pytest.raises(ToolTimeout, match="time limit exceeded"):
        env.step('<tool_call>{"name": "slow", "arguments": {"seconds": 3}}</tool_call>')
    obs = env.step('<tool_call>{"name": "slow", "arguments": {"seconds": 0}}</tool_call>')[0]
    assert obs == "<tool_response>done</tool_response>"


def test_a_server_that_dies_is_a_fault_and_is_started_again(server, qa):
    env = gym.make("steprl/QA-v0", path=qa, tools=[f"mcp:{server}"], max_turns=6)
    env.reset(seed=0)
    with pytest.raises(ToolTimeout, match="failed on die|is gone"):
        env.step('<tool_call>{"name": "die", "arguments": {}}</tool_call>')
    deadline = time.monotonic() + 30
    while True:  # the next call starts the server again
        try:
            obs = env.step('<tool_call>{"name": "add", "arguments": {"a": 1, "b": 1}}</tool_call>')[0]
            break
        except ToolTimeout:
            assert time.monotonic() < deadline
    assert obs == "<tool_response>2</tool_response>"


def test_a_taken_name_needs_a_prefix(server, tmp_path):
    clash = tmp_path / "clash.py"
    clash.write_text(SERVER.replace("def add(", "def calc("))
    with pytest.raises(ValueError, match="'calc', a name already taken .* give the entry a prefix"):
        resolve_tools([f"mcp:{sys.executable} {clash}"])
    names = resolve_tools([{"mcp": f"{sys.executable} {clash}", "prefix": "units."}])
    assert "units.calc" in names and get_tool("calc").description.startswith("Exact arithmetic")


def test_bad_entries_are_named():
    with pytest.raises(ValueError, match="name a server"):
        parse_entry("mcp:")
    with pytest.raises(ValueError, match="unknown key 'timeout'"):
        parse_entry({"mcp": "x", "timeout": 1})
    with pytest.raises(ValueError, match="time_limit_s must be a number > 0"):
        parse_entry({"mcp": "x", "time_limit_s": 0})
    with pytest.raises(ValueError, match="cannot be reached"):
        resolve_tools(["mcp:/no/such/server --flag"])


def test_a_streamable_http_server_at_a_url(server):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen([*server.split(" "), str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        deadline = time.monotonic() + 60
        while True:
            try:
                names = resolve_tools([{"mcp": url, "prefix": "web."}])
                break
            except ValueError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.5)
        from steprl.envs.tools import run_tool

        assert "web.add" in names and run_tool(get_tool("web.add"), {"a": 2, "b": 3}).text == "5"
    finally:
        proc.kill()


def test_a_missing_extra_is_named(server, qa, monkeypatch):
    monkeypatch.setitem(sys.modules, "mcp", None)  # as if the mcp package were not installed
    with pytest.raises(ImportError, match=r"pip install 'steprl\[mcp\]'"):
        gym.make("steprl/QA-v0", path=qa, tools=[f"mcp:{server}"])
