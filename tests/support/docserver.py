"""A tiny HTTPS object store on 127.0.0.1 for the Manager's download tests."""

from __future__ import annotations

import hashlib
import http.server
import threading

from broker.pki import Pki


class DocServer:
    """A tiny HTTPS object store: GET /{name} serves bytes; names can be made to fail.

    ``expired``: names answered with 403; ``gone``: 410; ``corrupt[name]``: how many
    responses still get a flipped byte. ``hits`` lists every path requested, ``connections``
    counts the connections accepted. ``keep_alive``: HTTP/1.1, a connection serves several
    requests until it sits idle ``idle_timeout`` seconds (else HTTP/1.0, one request each).
    """

    def __init__(self, pki: Pki, keep_alive: bool = False, idle_timeout: float = 5.0) -> None:
        self.files: dict[str, bytes] = {}
        self.expired: set[str] = set()
        self.gone: set[str] = set()
        self.corrupt: dict[str, int] = {}
        self.hits: list[str] = []
        self.connections = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if keep_alive else "HTTP/1.0"
            timeout = idle_timeout

            def setup(self) -> None:
                server.connections += 1
                super().setup()

            def do_GET(self) -> None:
                name = self.path.lstrip("/").split("?")[0]
                server.hits.append(name)
                if name in server.expired or name in server.gone:
                    self.send_response(403 if name in server.expired else 410)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                if server.corrupt.get(name, 0) > 0:
                    server.corrupt[name] -= 1
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.socket = pki.server_context().wrap_socket(self._httpd.socket, server_side=True)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> DocServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/{name}"

    def put(self, name: str, data: bytes) -> tuple[str, int, str]:
        """Store ``data``; return (url, size, sha256) as a presigned access would."""
        self.files[name] = data
        return self.url(name), len(data), hashlib.sha256(data).hexdigest()
