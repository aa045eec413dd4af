"""cicada: a fast ASGI server and asyncio event loop with a C core."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from cicada._sync import run_sync  # noqa: E402

__all__ = ["Config", "Server", "__version__", "run", "run_sync"]

if TYPE_CHECKING:
    from cicada.config import Config
    from cicada.main import run
    from cicada.server import Server


def __getattr__(name: str) -> Any:
    # Lazy, so `import cicada` stays cheap and never configures logging by itself.
    if name == "Config":
        from cicada.config import Config

        return Config
    if name == "Server":
        from cicada.server import Server

        return Server
    if name == "run":
        from cicada.main import run

        return run
    raise AttributeError(f"module 'cicada' has no attribute {name!r}")
