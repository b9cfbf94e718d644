"""Remote paths: the one place filesystems for URLs are built, opened, retried and redacted.

Any path with a scheme (``s3://``, ``gs://``, ``https://``, ... anything fsspec supports) is a URL;
everything else is a local path and keeps the plain ``open`` / ``os`` code path (no fsspec
import, no wrapper: ``open_input`` on a local file *is* ``open(path, "rb")``).

* **Endpoints and credentials.**  ``s3://`` filesystems are built here and only here, with
  ``endpoint_url`` passed explicitly from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` when set
  (pyarrow's ``S3FileSystem`` ignores that variable, and a client that silently falls back to
  the public AWS host is how a test reaches the real cloud).  Against an explicit endpoint the
  addressing is path-style (``http://127.0.0.1:9000/bucket/key``), which works on an IP.
  Credentials come only from the standard variables and files (botocore's chain:
  ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``~/.aws/...``,
  ``AWS_PROFILE``); a URL carrying a password is refused (``check_no_secret``).
* **Reads are range reads.**  ``open_input`` returns a seekable file whose bytes are fetched in
  aligned blocks of ``block_size`` (default 1 MiB) with ``cat_file(path, start, end)``, the
  last few blocks kept, so a task reading a 4 MiB byte range of a 1 GB WARC fetches ~5-6 MiB, never
  the file.  One GET per MiB costs ~1 ms on a local server and ~20-50 ms on S3 (first byte), so
  sequential reads stay network-bound, not latency-bound; larger blocks would waste more of the
  read-past-the-end a WARC shard does to finish its last member.
* **Transient errors** (HTTP 429/5xx, timeouts, resets, short reads) are retried with
  exponential backoff (0.2 s doubling, capped at 5 s, ``READ_ATTEMPTS`` tries) and counted
  through the ``on_retry`` callback (readers add them to their stats as ``extra.read_retries``);
  botocore's and s3fs's own retries are turned off so every retry is seen and counted once.
  Anything else (404, 403, a bad request), or a transient error that outlasts the attempts,
  raises ``RemoteReadError`` naming the URL.
* **Redaction.**  ``redact`` removes the values of the credential variables and any
  ``user:password@`` or signed-URL query from a text before it is logged or written.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gzip
import io
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import IO, Any

MiB = 1024 * 1024
READ_BLOCK = 1 * MiB
READ_ATTEMPTS = 6
BACKOFF_START_S = 0.2
BACKOFF_MAX_S = 5.0
SECRET_VARS = ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SESSION_TOKEN")
TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
TRANSIENT_NAMES = {
    "ServerDisconnectedError",
    "ClientPayloadError",
    "ClientConnectionError",
    "ClientConnectorError",
    "ClientOSError",
    "ServerTimeoutError",
    "ReadTimeoutError",
    "ConnectTimeoutError",
    "EndpointConnectionError",
    "ConnectionClosedError",
    "IncompleteRead",
    "ProtocolError",
    "ResponseStreamingError",
    "ContentLengthError",
    "TransferEncodingError",
}
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^/@\s:]*):(?P<pw>[^/@\s]*)@")
_SIGNED = re.compile(
    r"((?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|sig)=)[^&\s\"']+", re.I
)


# Read-ahead fetches of every RemoteFile in this process (a task reads one file at a time).
_READ_AHEAD = ThreadPoolExecutor(4, thread_name_prefix="winnow-read-ahead")


class RemoteReadError(OSError):
    """A remote file that could not be read (after retries where the error was transient)."""


def is_remote(path: object) -> bool:
    """Is ``path`` a URL (a scheme other than ``file://``)?"""
    if not isinstance(path, str):
        return False
    m = _SCHEME.match(path)
    return bool(m) and m.group(1).lower() != "file"


def join(base: str, key: str) -> str:
    """``base_url`` + a key from a paths file (one slash between them)."""
    return base.rstrip("/") + "/" + key.lstrip("/")


def check_no_secret(url: str) -> str | None:
    """A problem message if the URL carries a password (credentials belong in the environment)."""
    if _USERINFO.match(url) or _SIGNED.search(url):
        return (
            "credentials in a URL are not accepted (they would be written to the manifest and logs): "
            "set them in the environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, ...) or the "
            "store's config files"
        )
    return None


def redact(text: str) -> str:
    """``text`` without credential values, URL passwords or URL signatures."""
    for var in SECRET_VARS:
        value = os.environ.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, f"<{var}>")
    text = _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", text)
    return _SIGNED.sub(lambda m: m.group(1) + "***", text)


# --- filesystems ---------------------------------------------------------------------------------

_FS: dict[tuple, Any] = {}
_FS_LOCK = threading.Lock()


def s3_options() -> dict[str, Any]:
    """s3fs arguments from the standard AWS variables: an explicit endpoint when one is set."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    config: dict[str, Any] = {
        # our retry loop counts every retry; botocore retrying underneath would hide them
        "retries": {"max_attempts": 1, "mode": "standard"},
        "connect_timeout": 10,
        "read_timeout": 60,
    }
    client: dict[str, Any] = {}
    if endpoint:
        client["endpoint_url"] = endpoint
        config["s3"] = {"addressing_style": "path"}
    if region:
        client["region_name"] = region
    # no listing cache: another node may have written an object since this process listed
    return {"client_kwargs": client, "config_kwargs": config, "use_listings_cache": False}


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` (one per scheme and endpoint per process) and the path in it."""
    import fsspec

    protocol = _SCHEME.match(url).group(1).lower()  # type: ignore[union-attr]
    options: dict[str, Any] = {}
    if protocol in ("s3", "s3a"):
        protocol = "s3"
        options = s3_options()
    elif protocol in ("http", "https"):
        import aiohttp

        # aiohttp's default is one 5-minute total: a stalled server would hold a task that long
        # before the retry loop sees a timeout
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
        options = {"client_kwargs": {"timeout": timeout}}
    key = (protocol, repr(sorted(options.items())), os.getpid())
    with _FS_LOCK:
        fs = _FS.get(key)
        if fs is None:
            try:
                fs = fsspec.filesystem(protocol, skip_instance_cache=True, **options)
            except (ImportError, ValueError) as exc:  # e.g. gs:// without gcsfs installed
                raise RemoteReadError(f"{redact(url)}: no filesystem for {protocol}:// ({exc})") from None
            if hasattr(fs, "retries"):
                fs.retries = 1  # s3fs's own retries: ours count them (see module docstring)
            _FS[key] = fs
    return fs, fs._strip_protocol(url)


def to_url(fs: Any, path: str) -> str:
    return fs.unstrip_protocol(path)


# --- retries -------------------------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """A 5xx / 429 / timeout / reset / short read, seen directly or as the cause of ``exc``."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
            return False
        if isinstance(exc, (ConnectionError, TimeoutError, asyncio.TimeoutError)):
            return True
        if type(exc).__name__ in TRANSIENT_NAMES:
            return True
        status = getattr(exc, "status", None)
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or status
            code = response.get("Error", {}).get("Code", "")
            if code in ("SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"):
                return True
        if isinstance(status, int) and status in TRANSIENT_STATUS:
            return True
        if isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.ETIMEDOUT, errno.EPIPE):
            return True
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return False


def retrying(
    what: str,
    call: Callable[[], Any],
    on_retry: Callable[[], None] | None = None,
    attempts: int = READ_ATTEMPTS,
) -> Any:
    """``call()``, retried with backoff while it fails transiently; errors name ``what`` (a URL)."""
    delay = BACKOFF_START_S
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc):
                if isinstance(exc, (FileNotFoundError, PermissionError)):
                    raise type(exc)(f"{redact(what)}: {redact(str(exc))}") from exc
                raise RemoteReadError(f"{redact(what)}: {type(exc).__name__}: {redact(str(exc))}") from exc
            if attempt == attempts:
                raise RemoteReadError(
                    f"{redact(what)}: still failing after {attempts} attempts "
                    f"({type(exc).__name__}: {redact(str(exc))})"
                ) from exc
            if on_retry is not None:
                on_retry()
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)
    raise AssertionError("unreachable")


# --- reading -------------------------------------------------------------------------------------


class RemoteFile(io.RawIOBase):
    """A seekable read-only view of a remote file, fetched in aligned ``block_size`` range reads.

    Read-ahead: while the reader moves forward block by block, the next block is fetched in a
    background thread, so the GET's round trip overlaps the parsing of the current block (on S3,
    ~20-50 ms of first-byte latency per GET against ~75 ms to parse 1 MiB of WARC at 13 MB/s).
    A seek elsewhere (a shard's probe of its first member) starts no read-ahead.  Memory: the
    ``KEEP_BLOCKS`` last blocks plus one in flight.  ``requests`` and ``fetched`` count the GETs
    and bytes, so tests and stats can show that a byte-range task never downloaded the whole file."""

    KEEP_BLOCKS = 4

    def __init__(
        self,
        url: str,
        size: int | None = None,
        block_size: int = READ_BLOCK,
        on_retry: Callable[[], None] | None = None,
    ) -> None:
        self.url = url
        self.fs, self.path = filesystem(url)
        self.lock = threading.Lock()  # counters and on_retry: the read-ahead thread updates them too
        self.on_retry = on_retry
        self.size = size if size is not None else remote_size(url, on_retry)
        self.block_size = max(4096, block_size)
        self.pos = 0
        self.blocks: OrderedDict[int, bytes] = OrderedDict()
        self.ahead: dict[int, Future] = {}
        self.last = -2
        self.requests = 0
        self.fetched = 0

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.url

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def close(self) -> None:
        for future in self.ahead.values():
            future.cancel()
        self.ahead.clear()
        super().close()

    def _retried(self) -> None:
        if self.on_retry is not None:
            with self.lock:
                self.on_retry()

    def _fetch(self, index: int) -> bytes:
        start = index * self.block_size
        end = min(self.size, start + self.block_size)

        def fetch() -> bytes:
            with self.lock:
                self.requests += 1
            data = self.fs.cat_file(self.path, start=start, end=end)
            if len(data) != end - start:  # a dropped connection can end a body early
                raise ConnectionResetError(f"short read: {len(data)} of {end - start} bytes at {start}")
            return data

        block = retrying(f"{self.url} [bytes {start}:{end}]", fetch, self._retried)
        with self.lock:
            self.fetched += len(block)
        return block

    def _block(self, index: int) -> bytes:
        block = self.blocks.get(index)
        if block is not None:
            self.blocks.move_to_end(index)
            return block
        future = self.ahead.pop(index, None)
        block = future.result() if future is not None else self._fetch(index)
        self.blocks[index] = block
        while len(self.blocks) > self.KEEP_BLOCKS:
            self.blocks.popitem(last=False)
        nxt = index + 1
        if index == self.last + 1 and nxt * self.block_size < self.size and nxt not in self.ahead:
            self.ahead[nxt] = _READ_AHEAD.submit(self._fetch, nxt)
        self.last = index
        return block

    def readinto(self, b: Any) -> int:  # type: ignore[override]
        if self.pos >= self.size:
            return 0
        view = memoryview(b).cast("B")
        index, offset = divmod(self.pos, self.block_size)
        block = self._block(index)
        n = min(len(view), len(block) - offset)
        view[:n] = block[offset : offset + n]
        self.pos += n
        return n


def open_input(
    path: str,
    on_retry: Callable[[], None] | None = None,
    block_size: int = READ_BLOCK,
    size: int | None = None,
) -> IO[bytes]:
    """A buffered binary reader: ``open(path, "rb")`` for a local file, range reads for a URL."""
    if not is_remote(path):
        return open(path, "rb")
    return io.BufferedReader(RemoteFile(path, size, block_size, on_retry), 64 * 1024)


_SIZES: dict[str, int] = {}


def remote_size(url: str, on_retry: Callable[[], None] | None = None) -> int:
    if url not in _SIZES:
        fs, path = filesystem(url)
        _SIZES[url] = int(retrying(url, lambda: fs.size(path), on_retry))
    return _SIZES[url]


def size(path: str, on_retry: Callable[[], None] | None = None) -> int:
    """A file's size in bytes (local: ``os.path.getsize``)."""
    return remote_size(path, on_retry) if is_remote(path) else os.path.getsize(path)


def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(path)
    fs, p = filesystem(path)
    return bool(retrying(path, lambda: fs.exists(p)))


def read_bytes(path: str) -> bytes:
    """A whole (small) file, local or remote, retried."""
    if not is_remote(path):
        with open(path, "rb") as f:
            return f.read()
    fs, p = filesystem(path)
    return retrying(path, lambda: fs.cat_file(p))


def read_lines(path: str) -> list[str]:
    """The non-blank, non-comment lines of a text file, gunzipped if it is gzip (by its magic)."""
    data = read_bytes(path)
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    lines = (line.strip() for line in data.decode("utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def has_magic(path: str) -> bool:
    return any(c in path for c in "*?[")


def expand(pattern: str) -> list[str]:
    """URLs matching a remote glob (sorted), or the URL itself when it has no wildcard."""
    if not has_magic(pattern):
        return [pattern]
    fs, p = filesystem(pattern)
    found = retrying(pattern, lambda: fs.glob(p, detail=True))
    return sorted(to_url(fs, k) for k, info in found.items() if info.get("type", "file") == "file")


# --- writing (run directories on object storage) -------------------------------------------------


def put_file(local: str, url: str) -> None:
    """Upload a finished local file as one object (a PUT is atomic: readers see all or nothing)."""
    fs, p = filesystem(url)
    retrying(url, lambda: fs.put_file(local, p))


def put_bytes(url: str, data: bytes) -> None:
    fs, p = filesystem(url)
    retrying(url, lambda: fs.pipe_file(p, data))


def put_if_absent(url: str, data: bytes) -> bool:
    """Create the object only if no object has that key (S3 ``If-None-Match: *``); False if one
    exists.  Raises ``NotImplementedError`` where the store has no conditional writes."""
    fs, p = filesystem(url)
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "s3" not in protocols:
        raise NotImplementedError(f"{type(fs).__name__} has no conditional create")
    from fsspec.asyn import sync

    bucket, key, _ = fs.split_path(p)

    async def call() -> None:
        await fs._call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")

    try:
        sync(fs.loop, call)
    except Exception as exc:
        text = f"{exc} {exc.__cause__}"
        if "PreconditionFailed" in text or "412" in text or "ConditionalRequestConflict" in text:
            return False
        raise
    return True


def copy(src: str, dst: str) -> None:
    """A server-side copy of one object (S3 CopyObject: no bytes through this process)."""
    fs, p = filesystem(src)
    _, q = filesystem(dst)
    retrying(src, lambda: fs.copy(p, q))


def remove(url: str, recursive: bool = False) -> None:
    fs, p = filesystem(url)
    with contextlib.suppress(FileNotFoundError):
        retrying(url, lambda: fs.rm(p, recursive=recursive))


def list_files(url: str) -> dict[str, int]:
    """Every object under the prefix ``url``: key relative to it -> size ({} if none)."""
    fs, p = filesystem(url)
    try:
        found = retrying(url, lambda: fs.find(p, detail=True))
    except FileNotFoundError:
        return {}
    root = p.rstrip("/") + "/"
    return {k[len(root) :]: int(v.get("size", 0)) for k, v in found.items() if k.startswith(root)}


def download(url: str, local: str) -> None:
    fs, p = filesystem(url)
    retrying(url, lambda: fs.get_file(p, local))


def invalidate(url: str) -> None:
    """Forget cached listings (s3fs caches them; another node may have written since)."""
    fs, p = filesystem(url)
    fs.invalidate_cache(p)


# --- winnow validate --check-access --------------------------------------------------------------


def check_access(name: str, inputs: list[str], output: str, workers: int = 16) -> list[str]:
    """Problems (one line each) with reading ``inputs`` and writing ``output``: every input is
    opened for its size (a HEAD on a store; 16 at a time: ~1 s per 1,000 files on S3), and a probe
    object is written to and removed from the output.  Credentials never appear in a message."""
    from concurrent.futures import ThreadPoolExecutor

    def probe_input(path: str) -> str | None:
        try:
            if is_remote(path):
                remote_size(path)
            elif not os.access(path, os.R_OK):
                return f"{name}: input {path}: not readable"
        except Exception as exc:
            return f"{name}: input {redact(path)}: {redact(str(exc))}"
        return None

    with ThreadPoolExecutor(workers) as pool:
        problems = [p for p in pool.map(probe_input, inputs) if p]
    probe = f"_work/.winnow-access-check-{os.getpid()}-{int(time.time() * 1000)}"  # on a store
    try:
        if is_remote(output):
            url = output.rstrip("/") + "/" + probe
            put_bytes(url, b"winnow access check\n")
            remove(url)
        else:  # the output or its nearest existing parent must be writable (nothing is created)
            existing = os.path.abspath(output)
            while not os.path.exists(existing):
                existing = os.path.dirname(existing)
            if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
                raise PermissionError(f"{existing} is not a writable folder")
    except Exception as exc:
        problems.append(f"{name}: output {redact(output)} is not writable: {redact(str(exc))}")
    return problems
