"""An MCP server written with fastmcp: exact integer arithmetic as MCP tools (run over stdio by steprl)."""

from fastmcp import FastMCP

mcp = FastMCP("units")


@mcp.tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


if __name__ == "__main__":
    mcp.run(show_banner=False)
