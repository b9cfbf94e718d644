"""A throw-away Ray cluster of two nodes on loopback, owned (and ended by PID) by the test that made it.

Each node is a ``ray start --block`` process in its own session; at the end we signal exactly the
processes we started and their descendants (found before stopping), never other Rays.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NODE_PORTS = 200  # ports a node's fixed components and workers take, from its base port
NODE_STARTS = 4  # the head, then the worker node and its restarts (``_start``)


def _port_block(n: int, avoid: int) -> int:
    """A base port with ``n`` ports after it, not containing ``avoid`` (the GCS port): ray refuses
    to start when two components of a node would share a port (probabilistic; fine for a test)."""
    while True:
        base = free_port()
        if base + n < 65000 and not base <= avoid < base + n:
            return base


class TwoNodeCluster:
    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="wnw-ray-")  # short: unix socket paths are limited
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.procs: list[subprocess.Popen] = []
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # one block for every node start, each start its own slice: the nodes share 127.0.0.1, so
        # their worker-port ranges must not overlap (nor include the GCS port)
        self._ports = _port_block(NODE_PORTS * NODE_STARTS, avoid=self.port)
        self._starts = 0

    def _node_args(self, head: bool) -> list[str]:
        base = self._ports + NODE_PORTS * self._starts
        self._starts += 1
        args = [
            RAY,
            "start",
            "--block",
            "--num-cpus=1",
            "--node-ip-address=127.0.0.1",
            f"--node-manager-port={base}",
            f"--object-manager-port={base + 1}",
            f"--runtime-env-agent-port={base + 2}",
            f"--dashboard-agent-grpc-port={base + 3}",
            f"--dashboard-agent-listen-port={base + 4}",
            f"--metrics-export-port={base + 5}",
            f"--min-worker-port={base + 10}",
            f"--max-worker-port={base + 190}",
            "--disable-usage-stats",
        ]
        if head:
            args += ["--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.tmp}"]
        else:
            args += [f"--address={self.address}"]
        return args

    def start(self) -> TwoNodeCluster:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, head: bool) -> subprocess.Popen:
        with open(Path(self.tmp) / f"start-{head}.log", "wb") as log:  # the child keeps its own fd
            proc = subprocess.Popen(
                self._node_args(head),
                env=self.env,
                start_new_session=True,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.procs.append(proc)
        return proc

    def _start(self) -> None:
        self._launch(head=True)
        self._wait_for_nodes(1)
        for attempt in range(NODE_STARTS - 1):
            worker = self._launch(head=False)
            try:
                self._wait_for_nodes(2)
                return
            except RuntimeError as exc:
                # `ray start` gives a raylet a fixed 30 s to register (ray/_private/node.py), which a
                # 2-core machine busy with other work can exceed: start that node again (twice)
                if "timed out during startup" not in str(exc) or attempt == NODE_STARTS - 2:
                    raise
                self.procs.remove(worker)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(worker.pid, signal.SIGKILL)  # what its session left behind

    def _wait_for_nodes(self, n: int, timeout: float = 120) -> None:
        code = (
            "import ray,sys;ray.init(address=sys.argv[1],logging_level='ERROR');"
            "print(sum(1 for x in ray.nodes() if x['Alive']))"
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    log = sorted(Path(self.tmp).glob("start-*.log"))
                    raise RuntimeError(f"ray start exited: {[x.read_text()[-2000:] for x in log]}")
            try:  # ray.init hangs while nothing listens on the GCS port: check that first
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                time.sleep(0.5)
                continue
            res = subprocess.run(
                [sys.executable, "-c", code, self.address],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=90,
            )
            if res.returncode == 0 and res.stdout.strip().isdigit() and int(res.stdout.strip()) >= n:
                return
            time.sleep(1)
        raise TimeoutError(f"cluster did not reach {n} nodes")

    def stop(self) -> None:
        victims: list[psutil.Process] = []
        for p in self.procs:
            try:
                parent = psutil.Process(p.pid)
                victims += [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        # `ray start` daemons may re-parent; also take processes that use our own temp dir.
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(self.tmp in arg for arg in proc.info["cmdline"] or []):
                    victims.append(proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        for v in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                v.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(victims, timeout=5)
        for v in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                v.kill()
        for p in self.procs:
            p.wait(timeout=10)
        shutil.rmtree(self.tmp, ignore_errors=True)
