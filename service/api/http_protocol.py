"""uvicorn's HTTP protocol, answering requests it cannot parse in the API's error shape.

A request line or header uvicorn's parser refuses (a Content-Length that is not a number, or
too large for it) never reaches the application, and uvicorn answers it with a plain-text
400. These subclasses send the same 400 as `{"error": {"code": "bad_request", ...}}`, so a
client sees one error shape whatever it sent.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.h11_impl import H11Protocol

_MESSAGE = "malformed HTTP request (request line or headers, such as Content-Length)"
BODY = json.dumps({"error": {"code": "bad_request", "message": _MESSAGE}}).encode()


def _response(default_headers: list[tuple[bytes, bytes]]) -> bytes:
    lines = [b"HTTP/1.1 400 Bad Request\r\n"]
    lines += [name + b": " + value + b"\r\n" for name, value in default_headers]
    lines += [
        b"content-type: application/json\r\n",
        b"content-length: " + str(len(BODY)).encode() + b"\r\n",
        b"connection: close\r\n\r\n",
        BODY,
    ]
    return b"".join(lines)


class JsonErrorH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        del msg  # uvicorn's own wording; ours is in BODY
        self.transport.write(_response(self.server_state.default_headers))
        self.transport.close()


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools not installed: uvicorn uses h11
    #: The protocol class for uvicorn's `http` option (httptools when installed, as
    #: uvicorn's "auto" would choose).
    HTTP_PROTOCOL: type = JsonErrorH11Protocol
else:

    class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
        def send_400_response(self, msg: str) -> None:
            del msg
            self.transport.write(_response(self.server_state.default_headers))
            self.transport.close()

    HTTP_PROTOCOL = JsonErrorHttpToolsProtocol
