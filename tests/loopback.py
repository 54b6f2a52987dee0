"""The loopback HTTP(S) server under every test service (OpenTopography, the Copernicus bucket,
the orbit services, CMR, Earthdata login and the download server).

A `ThreadingHTTPServer` on 127.0.0.1 at a free port, served from a daemon thread between
`with server:` and its end; optionally behind TLS (a test CA's context). A subclass gives the
handler class and keeps its own state.
"""

from __future__ import annotations

import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class LoopbackServer:
    """`with Service(...) as service:` serves until the block ends; `service.url` reaches it."""

    scheme = "http"

    def __init__(
        self,
        handler: type[BaseHTTPRequestHandler],
        tls: ssl.SSLContext | None = None,
        quiet: bool = False,
    ) -> None:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        if quiet:  # clients hang up on purpose: no tracebacks on stderr
            self._httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        if tls is not None:
            self.scheme = "https"
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        # A short poll interval: shutdown() waits up to one interval, for every test.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"
