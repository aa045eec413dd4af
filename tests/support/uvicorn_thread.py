"""uvicorn's HTTP protocols (httptools or h11) on their own asyncio loop in a thread, for the
differential tests that hold cicada's server against uvicorn's. Nothing here judges anything."""

from __future__ import annotations

import asyncio

from support.server_thread import ServerThread


class UvicornThread(ServerThread):
    """uvicorn's protocol (httptools or h11) on its own loop, in a thread."""

    def __init__(self, app, protocol, logger):
        super().__init__(app, loop_kind="asyncio", backend="uvicorn")
        self.protocol = protocol
        self.logger = logger

    async def _serve(self):
        from uvicorn.config import Config
        from uvicorn.server import ServerState

        if self.protocol == "h11":
            from uvicorn.protocols.http.h11_impl import H11Protocol as Proto
        else:
            from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as Proto
        loop = asyncio.get_running_loop()
        config = Config(self.app, http=self.protocol, lifespan="off", log_config=None)
        config.load()
        state = ServerState()
        self._aio_server = await loop.create_server(
            lambda: Proto(config=config, server_state=state, app_state={}, _loop=loop),
            self.host, 0)
        self.port = self._aio_server.sockets[0].getsockname()[1]
