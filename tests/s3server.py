"""Local object stores for the storage tests, owned (and ended by PID) by the test that made them.

* ``S3Server``: moto's S3-compatible server (``python -m moto.server``) on 127.0.0.1, a subprocess
  of the test; ``env`` holds the variables a winnow process needs to use it (explicit endpoint,
  fake credentials, instance-metadata lookups off, so nothing can reach the real AWS).
* ``RangeServer``: a threaded HTTP server with ``Range`` support that serves a folder and can
  inject failures (503 answers, connections dropped mid-body) for the retry tests.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ACCESS_KEY = "AKIAWINNOWTESTKEY0001"
SECRET_KEY = "winnow-test-secret-9f3c2a7e5b1d"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "NO_PROXY": "127.0.0.1,localhost",
        }

    def start(self) -> S3Server:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("moto server exited") from None
                time.sleep(0.2)
        self.stop()
        raise TimeoutError("moto server did not start")

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


class RangeServer:
    """Serves ``root`` over HTTP/1.1 with ``Range``; ``fail_every`` makes every Nth GET fail,
    alternating a 503 and a connection dropped after half the body; a GET of a path in
    ``broken`` past its first byte always answers 503; ``gets`` logs (path, range)."""

    def __init__(self, root: Path, fail_every: int = 0) -> None:
        self.root = root
        self.fail_every = fail_every
        self.gets: list[tuple[str, str | None]] = []
        self.failures = 0
        self.broken: set[str] = set()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _file(self) -> Path | None:
                path = (server.root / self.path.lstrip("/").split("?")[0]).resolve()
                if not path.is_file() or server.root.resolve() not in path.parents:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return path

            def do_HEAD(self) -> None:
                path = self._file()
                if path is None:
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

            def do_GET(self) -> None:
                path = self._file()
                if path is None:
                    return
                data = path.read_bytes()
                rng = self.headers.get("Range")
                with server.lock:
                    server.gets.append((self.path, rng))
                    n = len(server.gets)
                    fail = server.fail_every and n % server.fail_every == 0
                    if fail:
                        server.failures += 1
                    drop = fail and server.failures % 2 == 0
                start, end = 0, len(data)
                if rng:
                    a, b = rng.split("=", 1)[1].split("-")
                    start, end = int(a), min(len(data), int(b) + 1 if b else len(data))
                body = data[start:end]
                if (fail and not drop) or (self.path in server.broken and start > 0):
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if drop:  # promise the whole body, send half, hang up
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> RangeServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
