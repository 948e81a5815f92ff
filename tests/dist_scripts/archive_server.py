"""A real HTTP server on 127.0.0.1 serving one archive (Range, cut connections, errors), and
a small archive in MM-IMDb's layout: what the download tests and the fault catalogue use."""

from __future__ import annotations

import http.server
import io
import json
import os
import socket
import tarfile
import threading

SPLIT = {"train": ["0000001"], "dev": ["0000002"], "test": []}


class ArchiveServer:
    """Serves one payload, honouring Range or not, recording each request's headers and body bytes.

    On the first request only, `cut_after` closes the connection after K body bytes and
    `stall_after` goes silent after K bytes; `status` answers every request with that error.
    """

    def __init__(
        self,
        payload: bytes,
        *,
        honor_range: bool = True,
        cut_after: int | None = None,
        stall_after: int | None = None,
        status: int | None = None,
    ) -> None:
        self.payload = payload
        self.honor_range = honor_range
        self.cut_after = cut_after
        self.status = status
        self.stall_after = stall_after
        self.release = threading.Event()
        self.requests: list[dict[str, str]] = []
        self.bytes_served: list[int] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(dict(self.headers.items()))
                server.bytes_served.append(0)
                if server.status:
                    self.send_error(server.status)
                    return
                body, first = server.payload, 0
                wanted = self.headers.get("Range")
                if wanted and server.honor_range:
                    first = int(wanted.removeprefix("bytes=").removesuffix("-"))
                    if first >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {first}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                body = body[first:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                first_request = len(server.requests) == 1
                short = server.cut_after if server.cut_after is not None else server.stall_after
                if first_request and short is not None:
                    body = body[:short]
                self.wfile.write(body)
                self.wfile.flush()
                server.bytes_served[-1] = len(body)
                self.close_connection = True
                if first_request and server.stall_after is not None:
                    server.release.wait(10)  # silent until the test ends: the client must time out
                if first_request and server.cut_after is not None:
                    self.connection.shutdown(socket.SHUT_RDWR)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/files/mmimdb.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> ArchiveServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _add_link(tar: tarfile.TarFile, name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    tar.addfile(info)


def mmimdb_tar_gz(extra: list[tuple[str, str, str]] | None = None) -> bytes:
    """A small archive in MM-IMDb's layout; the poster is random bytes so gzip cannot shrink it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        add_file(tar, "mmimdb/split.json", json.dumps(SPLIT).encode())
        for movie_id in ("0000001", "0000002"):
            meta = {"title": f"Movie {movie_id}", "year": 2001, "plot": ["A plot."], "genres": ["Drama"]}
            add_file(tar, f"mmimdb/dataset/{movie_id}.json", json.dumps(meta).encode())
            add_file(tar, f"mmimdb/dataset/{movie_id}.jpeg", os.urandom(60_000))
        for kind, name, target in extra or []:
            if kind == "file":
                add_file(tar, name, b"escaped")
            else:
                _add_link(tar, name, target, tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE)
    return buffer.getvalue()
