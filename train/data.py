"""Pretraining data: token shards (or text Parquet + a tokenizer) → packed ``block_size + 1`` windows.

**Stream.**  A source (one ``--data`` run directory) is a stream of documents, each ending with
``<|endoftext|>``, concatenated as in nanoGPT: no padding, a window freely spans document
boundaries.  Window ``k`` of a source is ``stream[k·T : k·T + T + 1]`` (T = block_size): windows
overlap by one token, so every adjacent pair of the stream is a training target exactly once (a
stride of T + 1 would waste 1/(T+1) of the targets).

**Order and epochs.**  Epoch 0 reads shards and row groups in the manifest's order (the ``tokenize``
stage already shuffled the rows globally).  When a source runs out it wraps to the next epoch,
which reads the shards in a permuted order and each shard's row groups in a permuted order, both
drawn from ``(seed, epoch)``: a different but reproducible sequence, at zero memory cost (rows are
never shuffled individually: that would need the whole epoch in memory).

**Window shuffle.**  Documents can be long (books of 100k+ tokens = 400 windows of 256), so windows
in stream order put a whole batch, and many batches in a row, inside one document: a noisy,
spiky loss.  nanoGPT samples windows at random offsets of the whole dataset; we get that diversity
with bounded memory: the stream is cut into *chunks* of ``n = ceil(shuffle_tokens / T)``
consecutive windows (``n·T + 1`` tokens, read in one piece), and a chunk's windows are emitted in a
permutation drawn from ``(seed, source folder name, chunk index)`` (a source's order does not
depend on what it is mixed with).  Chunk ``c`` holds exactly windows
``c·n … c·n + n − 1`` of the unshuffled stream, so the windows are the same multiset as without
shuffling (every adjacent pair a target once per pass, no token lost: a chunk ends on a window
boundary and the next starts there), only their order changes.  Default ``shuffle_tokens`` =
2^22 ≈ 4.2 M tokens: 8 MiB as uint16 (16 MiB as uint32), plus the next chunk read ahead on a thread,
so ≈ 2 chunks + 2 row groups per source and rank; a 100k-token book is ≤ 2.4 % of a chunk, so a
16-window batch rarely holds two windows of one document, and a 1M-tokens/s GPU run starts a new
chunk every ~4 s, while reading one takes 0.04-0.24 s on this machine (``runs/english_lm``, warm /
cold page cache), in the background.  Measured on that run (depth 4, block 256, batch 16, 600
steps): val loss 5.65 / 5.31 at steps 300 / 600 against 6.39 / 6.25 in stream order, and the
train loss's step-to-step spread (sd of differences, steps 301-600) 0.13 against 0.20.
``shuffle_tokens=0`` (``--shuffle-tokens 0``) turns it off: chunks of one window, stream order.  A
chunk is at most one epoch of a token source (a smaller dataset is shuffled whole); it may span an
epoch boundary (it then mixes the end of one epoch with the start of the next).  Validation windows
are never shuffled.

**Mixtures.**  ``--data A:0.7 --data B:0.3``: each *global* window is drawn from one source, chosen
by a seeded generator (numpy PCG64) with the given weights; every rank draws the same sequence.

**Ranks.**  Global window ``k`` belongs to rank ``k mod world_size``: ranks see disjoint windows and
together cover the global stream, and the windows one optimizer step consumes (``batch_tokens / T``
of them) are the same set whatever the world size, so one process with gradient accumulation and N
DDP processes compute the same update.  The price: every rank reads (and, for text sources,
tokenizes) the whole stream and skips the windows of the others.  Reading uint16 token shards costs
~1 ms per million tokens, far below a training step; tokenizing text on the fly (tiktoken, ~5-10 MB/s
per thread) is multiplied by the number of ranks, one more reason to run the ``tokenize`` stage.

**Memory.**  Unshuffled, a source holds the row groups covering the current window (usually one or
two, each ~1024 documents ≈ 1 M tokens ≈ 2 MB as uint16) plus the next one, read ahead on a thread;
never a whole shard.  Shuffled, it holds the current chunk and the next (read ahead on a thread),
plus the row group the next chunk starts in and the one after it.  Throughput on this machine (one
core, zstd shards of the tokenize stage's layout): ~4 M tokens/s from token shards, ~1.3-1.8 M
tokens/s tokenizing text Parquet on the fly.

**State.**  ``PretrainLoader.state_dict()`` holds, per source, the chunk index, the position in that
chunk's permutation and where the chunk starts in the stream: the epoch, the position in that
epoch's row-group order (with the shard and row-group numbers it names, checked on restore) and the
token offset inside it; plus the mixture generator's state and the global window count: plain ints
and strings.  A restore re-reads the chunk from its start and continues at the saved permutation
index: the exact next window.  Every rank ends each micro-batch at the same global window, so all
ranks hold identical state and rank 0's is saved.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import zlib
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from tokenizer.encoding import file_sha256

log = logging.getLogger(__name__)

TOKENS_FORMAT = "winnow.tokens/1"


class DataError(ValueError):
    """Bad or missing training data (the message names the path and what was expected)."""


# --------------------------------------------------------------------------------------------------
# Sources


@dataclass
class Source:
    """One run directory's documents of one split, as a list of Parquet files.

    ``kind`` is ``"tokens"`` (token shards + manifest) or ``"text"`` (``data/part-*.parquet``,
    tokenized on the fly with ``tokenizer``).
    """

    path: Path
    kind: str
    split: str
    files: list[Path]
    vocab_size: int
    eot_id: int
    weight: float = 1.0
    manifest_path: Path | None = None
    manifest_sha256: str | None = None
    tokenizer_dir: Path | None = None
    tokenizer_sha256: str | None = None
    tokens: int | None = None  # total tokens of the split when known (token shards)
    tokenizer: object | None = field(default=None, repr=False)
    url: str | None = None  # where a source on object storage lives (``path`` is its local copy)

    @property
    def name(self) -> str:
        return self.path.name

    def lineage(self) -> dict:
        return {
            "path": self.url or str(self.path),
            "kind": self.kind,
            "split": self.split,
            "weight": self.weight,
            "manifest": str(self.manifest_path) if self.manifest_path else None,
            "sha256": self.manifest_sha256,
        }


def parse_data_spec(spec: str) -> tuple[str, float]:
    """``"RUN_DIR"`` → (RUN_DIR, 1.0); ``"RUN_DIR:0.7"`` → (RUN_DIR, 0.7)."""
    path, sep, weight = spec.rpartition(":")
    if sep and path:
        try:
            w = float(weight)
        except ValueError:
            return spec, 1.0  # a ':' inside the path
        if not math.isfinite(w) or w <= 0:
            raise DataError(f"--data {spec}: the mixture weight must be a positive number (got {weight})")
        return path, w
    return spec, 1.0


def _tokens_manifest(path: Path) -> Path | None:
    for cand in (path / "tokens" / "manifest.json", path / "manifest.json"):
        if cand.is_file():
            try:
                fmt = json.loads(cand.read_text()).get("format")
            except (json.JSONDecodeError, AttributeError):
                fmt = None
            if fmt == TOKENS_FORMAT or cand.parent.name == "tokens":
                return cand
    return None


def mirror_remote(url: str) -> Path:
    """A node-local copy of a run directory (or its ``tokens/`` folder) on object storage:
    ``manifest.json``, ``tokens/`` and ``tokenizer/``, else ``data/`` (text to tokenize on the fly),
    under ``$WINNOW_SCRATCH`` (default the temp dir) and named after the URL's last component.

    Training reads every shard once per epoch, in a shuffled row-group order: a local copy is
    fetched once and then read (and memory-mapped) at disk speed, where range reads would pay a
    store round trip (~20-50 ms on S3) per row group per epoch.  The price is local disk for the
    token shards (2 bytes a token below 65,536 ids: 1 B tokens = 2 GB).  Files already present at
    the store's size are not fetched again, so ranks sharing a node, and reruns, reuse the copy.
    """
    from pipeline.rundir import RunDir, scratch_dir

    base = url.rstrip("/")
    rd = RunDir(base, scratch=scratch_dir(f"train:{base}") / base.rsplit("/", 1)[-1])
    for name in ("manifest.json", "tokens", "tokenizer"):
        rd.fetch(rd.root / name)
    if _tokens_manifest(rd.root) is None:
        rd.fetch(rd.data)
    if not rd.root.is_dir() or not any(rd.root.iterdir()):
        raise DataError(f"data path {url}: nothing there (no manifest.json, tokens/ or data/)")
    return rd.root


def open_source(path: str | Path, split: str = "train", *, tokenizer=None, weight: float = 1.0) -> Source:
    """A run directory (or its ``tokens/`` folder) as a ``Source`` of ``split`` ("train" or "val").

    Without token shards, ``data/part-*.parquet`` is read as text and tokenized with ``tokenizer``
    (a ``tokenizer.Tokenizer``); a text source has no splits: all its documents are used.
    """
    if storage.is_remote(str(path)):
        source = open_source(mirror_remote(str(path)), split, tokenizer=tokenizer, weight=weight)
        source.url = str(path)
        return source
    p = Path(path)
    if not p.exists():
        raise DataError(f"data path {p} does not exist")
    manifest_path = _tokens_manifest(p)
    if manifest_path is not None:
        return _open_tokens(p, manifest_path, split, tokenizer, weight)
    parts = sorted((p / "data").glob("part-*.parquet")) if (p / "data").is_dir() else []
    if not parts:
        raise DataError(
            f"{p}: missing manifest: no tokens/manifest.json (run the tokenize stage) and no "
            f"data/part-*.parquet to tokenize on the fly"
        )
    if tokenizer is None:
        raise DataError(
            f"{p} has text Parquet but no token shards (tokens/manifest.json): pass --tokenizer DIR "
            f"to tokenize it on the fly, or run the tokenize stage"
        )
    run_manifest = p / "manifest.json"
    return Source(
        path=p,
        kind="text",
        split="all",
        files=parts,
        vocab_size=tokenizer.vocab_size,
        eot_id=tokenizer.eot_id,
        weight=weight,
        manifest_path=run_manifest if run_manifest.is_file() else None,
        manifest_sha256=file_sha256(run_manifest) if run_manifest.is_file() else None,
        tokenizer_dir=Path(tokenizer.path),
        tokenizer_sha256=tokenizer.sha256,
        tokenizer=tokenizer,
    )


def _open_tokens(p: Path, manifest_path: Path, split: str, tokenizer, weight: float) -> Source:
    raw = manifest_path.read_bytes()
    try:
        m = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"{manifest_path}: not valid JSON ({exc})") from None
    if m.get("format") != TOKENS_FORMAT:
        raise DataError(f"{manifest_path}: format {m.get('format')!r}, expected {TOKENS_FORMAT!r}")
    for key in ("vocab_size", "eot_id", "splits"):
        if key not in m:
            raise DataError(f"{manifest_path}: missing key {key!r}")
    info = m["splits"].get(split)
    if not info or not info.get("shards") or not info.get("tokens"):
        raise DataError(f"{manifest_path}: the {split!r} split is empty (no shards or no tokens)")
    root = manifest_path.parent
    files = [root / s["path"] for s in info["shards"]]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{manifest_path}: shard file(s) missing: {', '.join(missing[:3])}")
    tok_meta = m.get("tokenizer") or {}
    want_sha = tok_meta.get("tokenizer_json_sha256")
    tok_dir = (root / tok_meta["path"]).resolve() if tok_meta.get("path") else None
    if tok_dir is not None and (tok_dir / "tokenizer.json").is_file() and want_sha:
        have = file_sha256(tok_dir / "tokenizer.json")
        if have != want_sha:
            raise DataError(
                f"tokenizer hash mismatch: {manifest_path} was tokenized with tokenizer.json sha256 "
                f"{want_sha}, but {tok_dir / 'tokenizer.json'} has {have}"
            )
    if tokenizer is not None and want_sha and tokenizer.sha256 != want_sha:
        raise DataError(
            f"tokenizer hash mismatch: {manifest_path} was tokenized with tokenizer.json sha256 {want_sha}, "
            f"--tokenizer {tokenizer.path} has {tokenizer.sha256}"
        )
    if tok_dir is not None and not tok_dir.is_dir():
        tok_dir = None
    if tokenizer is not None:
        tok_dir = Path(tokenizer.path)
    return Source(
        path=p,
        kind="tokens",
        split=split,
        files=files,
        vocab_size=int(m["vocab_size"]),
        eot_id=int(m["eot_id"]),
        weight=weight,
        manifest_path=manifest_path,
        manifest_sha256=hashlib.sha256(raw).hexdigest(),
        tokenizer_dir=tok_dir,
        tokenizer_sha256=want_sha,
        tokens=int(info["tokens"]),
        tokenizer=tokenizer,
    )


def check_compatible(sources: Sequence[Source]) -> None:
    """All sources must share vocabulary, separator and tokenizer (else their ids mean different things)."""
    if not sources:
        raise DataError("no data sources")
    first = sources[0]
    for s in sources[1:]:
        if (s.vocab_size, s.eot_id) != (first.vocab_size, first.eot_id):
            raise DataError(
                f"vocab mismatch: {first.path} has vocab_size {first.vocab_size} (eot {first.eot_id}), "
                f"{s.path} has {s.vocab_size} (eot {s.eot_id}); mix only data tokenized alike"
            )
        if first.tokenizer_sha256 and s.tokenizer_sha256 and first.tokenizer_sha256 != s.tokenizer_sha256:
            raise DataError(
                f"tokenizer hash mismatch: {first.path} uses tokenizer.json sha256 {first.tokenizer_sha256}, "
                f"{s.path} uses {s.tokenizer_sha256}"
            )


# --------------------------------------------------------------------------------------------------
# Reading one row group as a flat token array


def _token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 65536 else np.uint32


def _read_tokens(pf: pq.ParquetFile, rg: int, source: Source, where: str) -> np.ndarray:
    col = pf.read_row_group(rg, columns=["input_ids"]).column("input_ids")
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if len(arr) == 0:
        return np.zeros(0, dtype=_token_dtype(source.vocab_size))
    if arr.null_count:
        raise DataError(f"{where}: {arr.null_count} null input_ids")
    values = arr.flatten().to_numpy(zero_copy_only=False)
    lengths = arr.value_lengths().to_numpy(zero_copy_only=False)
    if (lengths == 0).any():
        raise DataError(f"{where}: empty input_ids (every document ends with <|endoftext|>)")
    ends = np.cumsum(lengths) - 1
    if (values[ends] != source.eot_id).any():
        raise DataError(f"{where}: a document does not end with eot_id {source.eot_id}")
    if values.size and int(values.max()) >= source.vocab_size:
        raise DataError(f"{where}: token id {int(values.max())} >= vocab_size {source.vocab_size}")
    return values


def _read_text(pf: pq.ParquetFile, rg: int, source: Source, where: str) -> np.ndarray:
    if "text" not in pf.schema_arrow.names:
        raise DataError(f"{where}: no 'text' column")
    texts = [t for t in pf.read_row_group(rg, columns=["text"]).column("text").to_pylist() if t]
    ids = source.tokenizer.encode_batch(texts)
    out = np.empty(sum(len(x) + 1 for x in ids), dtype=_token_dtype(source.vocab_size))
    i = 0
    for x in ids:  # one copy per document; np.concatenate of lists would convert each anyway
        out[i : i + len(x)] = x
        out[i + len(x)] = source.eot_id
        i += len(x) + 1
    return out


class _Cursor:
    """A position (epoch, index in that epoch's row-group order, token offset) in one source's stream.

    ``take(n, advance)`` returns the next ``n`` tokens and moves forward ``advance`` (≤ n) tokens;
    the row groups covering the returned tokens are cached, the rest are dropped.  The row group
    after the last cached one is read ahead on a background thread (Parquet decoding and tiktoken
    release the GIL), so reading overlaps training; the prefetch is a cache only and never changes
    which tokens come next.
    """

    def __init__(self, source: Source, seed: int, *, wrap: bool = True, prefetch: bool = True):
        self.source = source
        self.seed = seed
        self.wrap = wrap
        self._read = _read_tokens if source.kind == "tokens" else _read_text
        self._row_groups = [pq.ParquetFile(f).metadata.num_row_groups for f in source.files]
        if sum(self._row_groups) == 0:
            raise DataError(f"{source.path}: the {source.split!r} split has no row groups")
        self._orders: dict[int, list[tuple[int, int]]] = {}
        self.epoch, self.position, self.offset = 0, 0, 0
        # cached row groups from (epoch, position) on: [(epoch, position, tokens), ...]
        self._chunks: list[tuple[int, int, np.ndarray]] = []
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="winnow-data") if prefetch else None
        self._pending: tuple[tuple[int, int], Future] | None = None

    def order(self, epoch: int) -> list[tuple[int, int]]:
        """(file, row group) pairs of one epoch: manifest order at epoch 0, then permuted."""
        if epoch not in self._orders:
            files = list(range(len(self._row_groups)))
            if epoch == 0:
                order = [(f, g) for f in files for g in range(self._row_groups[f])]
            else:
                rng = np.random.default_rng([self.seed, epoch])
                order = [
                    (int(f), int(g))
                    for f in rng.permutation(files)
                    for g in rng.permutation(self._row_groups[f])
                ]
            # keep this epoch's and the one before (the current one, while reading ahead into this)
            self._orders = {e: o for e, o in self._orders.items() if e >= epoch - 1}
            self._orders[epoch] = order
        return self._orders[epoch]

    def _next(self, epoch: int, position: int) -> tuple[int, int] | None:
        if position + 1 < len(self.order(epoch)):
            return epoch, position + 1
        return (epoch + 1, 0) if self.wrap else None

    def _read_file(self, path: Path, g: int) -> np.ndarray:
        with pq.ParquetFile(path) as pf:  # its own handle: safe on the prefetch thread
            return self._read(pf, g, self.source, f"{path} row group {g}")

    def _load(self, epoch: int, position: int) -> np.ndarray:
        if self._pending is not None and self._pending[0] == (epoch, position):
            chunk = self._pending[1].result()
        else:
            f, g = self.order(epoch)[position]
            chunk = self._read_file(self.source.files[f], g)
        self._pending = None
        nxt = self._next(epoch, position)
        if self._pool is not None and nxt is not None:
            f, g = self.order(nxt[0])[nxt[1]]  # orders are computed on this thread only
            self._pending = (nxt, self._pool.submit(self._read_file, self.source.files[f], g))
        return chunk

    def _ensure(self, n: int) -> bool:
        """Cache row groups until ``n`` tokens from the offset are loaded; False at the end (no wrap)."""
        if not self._chunks:
            self._chunks.append((self.epoch, self.position, self._load(self.epoch, self.position)))
        have = sum(len(c) for _, _, c in self._chunks) - self.offset
        empty_run = 0
        while have < n:
            nxt = self._next(*self._chunks[-1][:2])
            if nxt is None:
                return False
            chunk = self._load(*nxt)
            empty_run = empty_run + 1 if len(chunk) == 0 else 0
            if empty_run > len(self.order(nxt[0])):
                raise DataError(f"{self.source.path}: a whole epoch of {self.source.split!r} has no tokens")
            self._chunks.append((*nxt, chunk))
            have += len(chunk)
        return True

    def take(self, n: int, advance: int) -> np.ndarray | None:
        if not self._ensure(n):
            return None
        pieces, start, need = [], self.offset, n
        for _, _, c in self._chunks:
            piece = c[start : start + need]
            pieces.append(piece)
            need -= len(piece)
            start = 0
            if need == 0:
                break
        self.skip(advance)
        return pieces[0].copy() if len(pieces) == 1 else np.concatenate(pieces)

    def skip(self, n: int) -> None:
        if n and not self._ensure(n):
            raise DataError(f"{self.source.path}: skipped past the end of the stream")
        self.offset += n
        while self._chunks and self.offset >= len(self._chunks[0][2]):
            self.offset -= len(self._chunks.pop(0)[2])
            nxt = self._next(self.epoch, self.position)
            if nxt is None:  # end of a non-wrapping stream: park after the last row group
                self.position += 1
                break
            self.epoch, self.position = nxt

    def state_dict(self) -> dict:
        order = self.order(self.epoch)
        f, g = order[self.position] if self.position < len(order) else (-1, -1)
        return {
            "path": str(self.source.path),
            "epoch": self.epoch,
            "position": self.position,
            "shard": f,
            "row_group": g,
            "offset": self.offset,
        }

    def load_state_dict(self, state: dict) -> None:
        order = self.order(int(state["epoch"]))
        pos = int(state["position"])
        if pos < len(order) and tuple(order[pos]) != (state["shard"], state["row_group"]):
            raise DataError(
                f"{self.source.path}: data state names shard {state['shard']} row group {state['row_group']} "
                f"at position {pos} of epoch {state['epoch']}, but the data has {order[pos]} there: "
                f"the shards changed since the checkpoint"
            )
        self.epoch, self.position, self.offset = int(state["epoch"]), pos, int(state["offset"])
        self._chunks, self._pending = [], None


DEFAULT_SHUFFLE_TOKENS = 1 << 22  # ≈ 4.2 M tokens per chunk (see "Window shuffle" above)


class _Windows:
    """One source's training windows: chunks of ``n`` consecutive stream windows, each chunk's
    windows in a seeded permutation (``n == 1``: stream order, no shuffle).

    The next chunk is read ahead on a thread as soon as the current one is loaded (the stream
    cursor is then touched by that thread only, until its result is collected), so a chunk
    boundary costs no read on the training thread.  ``_start`` is the stream position where the
    current chunk begins, captured before the read: the state needs no live cursor.
    """

    def __init__(self, source: Source, *, block_size: int, chunk_windows: int, seed: int):
        self.stream = _Cursor(source, seed)
        self.source, self.seed = source, seed
        self._name_key = zlib.crc32(source.name.encode())
        self.T, self.n = block_size, chunk_windows
        self.chunk, self.pos = 0, 0  # chunk number in the stream, index into its permutation
        self._start = self.stream.state_dict()
        self._tokens: np.ndarray | None = None  # the current chunk: n·T + 1 tokens
        self._perm: np.ndarray | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="winnow-chunk") if self.n > 1 else None
        self._ahead: tuple[dict, Future] | None = None  # (start state, tokens) of chunk + 1

    @property
    def epoch(self) -> int:
        """The epoch the current chunk starts in."""
        return int(self._start["epoch"])

    def _read_chunk(self) -> np.ndarray:
        return self.stream.take(self.n * self.T + 1, self.n * self.T)

    def _load(self) -> None:
        if self._ahead is not None:
            start, future = self._ahead
            self._ahead = None
            tokens = future.result()
            if start != self._start:  # cannot happen unless the bookkeeping is broken
                raise RuntimeError(f"read-ahead chunk starts at {start}, expected {self._start}")
        else:
            tokens = self._read_chunk()
        self._tokens = tokens
        if self.n == 1:
            self._perm = np.zeros(1, dtype=np.int64)
        else:
            # the chunk index names the chunk (it counts across epochs); the folder name, not the
            # position in --data, keeps sources apart, so a source's order is the same in any mixture
            rng = np.random.default_rng([self.seed, self._name_key, self.chunk])
            self._perm = rng.permutation(self.n)
        if self._pool is not None:
            nxt = self.stream.state_dict()  # the stream now stands where the next chunk starts
            self._ahead = (nxt, self._pool.submit(self._read_chunk))

    def _advance(self) -> None:
        self.pos += 1
        if self.pos == self.n:
            self.chunk, self.pos = self.chunk + 1, 0
            # where the next chunk starts: captured when this chunk was read (the stream is ahead)
            self._start = self._ahead[0] if self._ahead is not None else self.stream.state_dict()
            self._tokens = self._perm = None

    def take(self) -> np.ndarray:
        """The next window (``T + 1`` tokens, a view into the chunk)."""
        if self._tokens is None:
            self._load()
        k = int(self._perm[self.pos]) * self.T
        window = self._tokens[k : k + self.T + 1]
        self._advance()
        return window

    def skip(self) -> None:
        """Pass over the next window (another rank's): every rank holds the whole chunk anyway."""
        if self._tokens is None:
            self._load()
        self._advance()

    def _settle(self) -> None:
        """Wait for a read-ahead in flight (it moves the stream cursor) and drop it."""
        if self._ahead is not None:
            self._ahead[1].result()
            self._ahead = None

    def state_dict(self) -> dict:
        return {"path": str(self.source.path), "chunk": self.chunk, "index": self.pos, "start": self._start}

    def load_state_dict(self, state: dict) -> None:
        self._settle()
        self.stream.load_state_dict(state["start"])
        self._start = self.stream.state_dict()
        self.chunk, self.pos = int(state["chunk"]), int(state["index"])
        if not 0 <= self.pos < self.n:
            raise DataError(f"{self.source.path}: data state index {self.pos} outside a chunk of {self.n}")
        self._tokens = self._perm = None


# --------------------------------------------------------------------------------------------------
# Training batches


class PretrainLoader:
    """Micro-batches ``(x, y)`` of shape (micro_batch, block_size), int64, for one DDP rank.

    Each call consumes ``micro_batch · world_size`` global windows (this rank keeps every
    ``world_size``-th) and returns this rank's ``micro_batch``.  ``shuffle_tokens``: the chunk
    within which windows are shuffled (rounded up to whole windows); 0 = stream order.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        block_size: int,
        micro_batch: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_tokens: int = DEFAULT_SHUFFLE_TOKENS,
    ):
        check_compatible(sources)
        if block_size < 1 or micro_batch < 1:
            raise ValueError("block_size and micro_batch must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of {world_size}")
        if shuffle_tokens < 0:
            raise ValueError(f"shuffle_tokens must be >= 0 (0 = no shuffle), got {shuffle_tokens}")
        self.sources = list(sources)
        self.block_size, self.micro_batch = block_size, micro_batch
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle_tokens = seed, shuffle_tokens
        self.cursors = [
            _Windows(s, block_size=block_size, chunk_windows=self.chunk_windows(s), seed=seed)
            for s in self.sources
        ]
        weights = np.array([s.weight for s in self.sources], dtype=np.float64)
        self.cum_weights = np.cumsum(weights / weights.sum())
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.windows = 0  # global windows consumed
        self.windows_by_source = [0] * len(self.sources)

    def chunk_windows(self, source: Source) -> int:
        """Windows per shuffle chunk: ``shuffle_tokens`` rounded up to whole windows, at most one
        epoch of a token source (a larger chunk would hold repeats and only cost memory)."""
        n = math.ceil(self.shuffle_tokens / self.block_size)
        if source.tokens is not None:
            n = min(n, source.tokens // self.block_size)
        return max(1, n)

    def _pick(self) -> int:
        if len(self.sources) == 1:
            return 0
        return min(
            int(np.searchsorted(self.cum_weights, self.rng.random(), side="right")), len(self.sources) - 1
        )

    def next_windows(self) -> np.ndarray:
        """(micro_batch, block_size + 1) token windows of this rank, in the sources' dtype."""
        out = []
        for j in range(self.micro_batch * self.world_size):
            s = self._pick()
            self.windows_by_source[s] += 1
            if j % self.world_size == self.rank:
                out.append(self.cursors[s].take())
            else:
                self.cursors[s].skip()
        self.windows += self.micro_batch * self.world_size
        return np.stack(out)

    def next_batch(self):
        import torch

        w = torch.from_numpy(self.next_windows().astype(np.int64))
        return w[:, :-1], w[:, 1:]

    def epochs(self) -> list[int]:
        return [c.epoch for c in self.cursors]

    def state_dict(self) -> dict:
        return {
            "format": "winnow.loader/2",
            "block_size": self.block_size,
            "seed": self.seed,
            "shuffle_tokens": self.shuffle_tokens,
            "windows": self.windows,
            "windows_by_source": list(self.windows_by_source),
            "rng": self.rng.bit_generator.state,
            "sources": [c.state_dict() for c in self.cursors],
        }

    def load_state_dict(self, state: dict) -> None:
        fmt = state.get("format")
        if fmt != "winnow.loader/2":
            raise DataError(f"unknown data-loader state format {fmt!r} (this winnow reads winnow.loader/2)")
        saved_shuffle = state["shuffle_tokens"]
        if (state["block_size"], state["seed"], saved_shuffle) != (
            self.block_size,
            self.seed,
            self.shuffle_tokens,
        ):
            raise DataError(
                f"data state was saved with block_size {state['block_size']}, seed {state['seed']} and "
                f"shuffle_tokens {saved_shuffle}; this run has {self.block_size}, {self.seed} and "
                f"{self.shuffle_tokens}"
            )
        paths = [s["path"] for s in state["sources"]]
        if paths != [str(s.path) for s in self.sources]:
            raise DataError(
                f"data state is for sources {paths}, this run reads {[str(s.path) for s in self.sources]}"
            )
        for cursor, st in zip(self.cursors, state["sources"]):
            cursor.load_state_dict(st)
        self.rng.bit_generator.state = state["rng"]
        self.windows = int(state["windows"])
        self.windows_by_source = list(state["windows_by_source"])


# --------------------------------------------------------------------------------------------------
# Validation


def val_windows(
    source: Source, block_size: int, max_windows: int, *, rank: int = 0, world_size: int = 1
) -> np.ndarray:
    """This rank's share of the first ``max_windows`` windows of ``source`` (epoch 0, no wrap).

    The same windows at every evaluation, so val curves are comparable; windows are dealt to ranks
    round robin (counts may differ by one: callers sum losses and counts, then all-reduce).
    """
    cursor = _Cursor(source, seed=0, wrap=False, prefetch=False)
    T, out = block_size, []
    for k in range(max_windows):
        w = cursor.take(T + 1, T)
        if w is None:
            break
        if k % world_size == rank:
            out.append(w)
    if not out and rank == 0:
        raise DataError(
            f"{source.path}: the {source.split!r} split has fewer than {T + 1} tokens, too few for one "
            f"validation window of block_size {T}"
        )
    return np.stack(out) if out else np.zeros((0, T + 1), dtype=_token_dtype(source.vocab_size))


def token_byte_lengths(tokenizer, vocab_size: int | None = None) -> np.ndarray:
    """UTF-8 byte length of every token id; 0 for special tokens, which carry no text.

    Bits per byte (nanochat's convention) sums the loss of targets whose byte length is > 0 and
    divides by the sum of those byte lengths, so it compares across tokenizers and ignores the
    separators, whose cost depends on the document count, not the text.
    """
    n = vocab_size or tokenizer.vocab_size
    specials = set(tokenizer.special_tokens.values())
    return np.array([0 if i in specials else len(tokenizer.token_bytes(i)) for i in range(n)], dtype=np.int64)


def load_tokenizer(path: str | Path):
    """``tokenizer.Tokenizer.from_dir`` with a DataError naming the path on failure."""
    from tokenizer import Tokenizer

    try:
        return Tokenizer.from_dir(path)
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"cannot load tokenizer {path}: {exc}") from None
