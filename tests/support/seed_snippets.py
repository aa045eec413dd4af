"""The three ways the user's story (shared/seed) calls async code from sync code at import
time, as app-module sources. Each module sets RESULT to "initialised"."""

SNIPPETS = {
    "get_event_loop": """
        import asyncio
        async def init():
            await asyncio.sleep(0.001)
            return "initialised"
        loop = asyncio.get_event_loop()
        RESULT = loop.run_until_complete(init())
    """,
    "new_event_loop": """
        import asyncio
        async def init():
            await asyncio.sleep(0.001)
            return "initialised"
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        RESULT = loop.run_until_complete(init())
    """,
    # The nest_asyncio recipe with the library absent: no policy swap, no patching.
    "nest_asyncio_variant": """
        import asyncio
        try:
            import nest_asyncio  # noqa: F401  (absent: cicada's loop nests on its own)
        except ImportError:
            nest_asyncio = None
        async def init():
            await asyncio.sleep(0.001)
            return "initialised"
        loop = asyncio.new_event_loop()
        if nest_asyncio is not None:
            nest_asyncio.apply(loop)
        asyncio.set_event_loop(loop)
        RESULT = loop.run_until_complete(init())
        loop.close()
    """,
}
