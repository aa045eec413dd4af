"""cicada: a fast ASGI server and asyncio event loop with a C core."""

__version__ = "0.1.0"

from cicada._sync import run_sync  # noqa: E402
