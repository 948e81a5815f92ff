"""A Hugging Face hub on 127.0.0.1: the four endpoints `snapshot_download` and `from_pretrained`
use, serving model folders as repositories (`HF_ENDPOINT=http://127.0.0.1:<port>`).

- GET  /api/models/<repo>/revision/<rev>   repository info (its commit sha)
- GET  /api/models/<repo>/tree/<rev>       the file listing
- HEAD /<repo>/resolve/<rev>/<file>        metadata: X-Repo-Commit, ETag, Content-Length
- GET  /<repo>/resolve/<rev>/<file>        the bytes
Requests are logged (`requests`), so a test can assert that an offline run made none.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

COMMIT = "0" * 39 + "1"


class HubServer:
    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos = repos
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet test output
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
                self.send_response(status)
                for key, value in {"Content-Length": str(len(data)), **headers}.items():
                    self.send_header(key, value)
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _serve(self, body: bool) -> None:
                path = unquote(urlparse(self.path).path)
                server.requests.append(f"{self.command} {path}")
                for repo, folder in server.repos.items():
                    if path == f"/api/models/{repo}":  # what `hub._check_on_hub` asks first
                        info = json.dumps({"id": repo, "modelId": repo, "sha": COMMIT}).encode()
                        return self._send(200, info, {"Content-Type": "application/json"}, body)
                    if path.startswith(f"/api/models/{repo}/revision/"):
                        info = {
                            "id": repo,
                            "modelId": repo,
                            "sha": COMMIT,
                            "siblings": [{"rfilename": f.name} for f in sorted(folder.iterdir())],
                        }
                        return self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)
                    if path.startswith(f"/api/models/{repo}/tree/"):
                        tree = [
                            {
                                "type": "file",
                                "path": f.name,
                                "size": f.stat().st_size,
                                "oid": hashlib.sha1(f.read_bytes()).hexdigest(),
                            }
                            for f in sorted(folder.iterdir())
                        ]
                        return self._send(200, json.dumps(tree).encode(), {"Content-Type": "application/json"}, body)
                    prefix = f"/{repo}/resolve/"
                    if path.startswith(prefix):
                        name = path[len(prefix) :].split("/", 1)[1]
                        file = folder / name
                        if "/" in name or not file.is_file():
                            return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, body)
                        data = file.read_bytes()
                        return self._send(
                            200, data, {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}, body
                        )
                self._send(404, b"", {"X-Error-Code": "RepoNotFound"}, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
