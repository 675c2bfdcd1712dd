"""A real multi-node Ray cluster on this machine, for tests: ``ray start`` nodes, token auth.

Every node is one ``ray start`` run in a process session of its own (``start_new_session``): the
daemons it leaves behind (GCS, raylet, agents) and the workers their raylet forks keep that
session, so a node's processes are exactly those of its session, and :meth:`LocalCluster.stop`
ends only what this harness started. ``ray stop`` is never used: it stops every Ray on the machine,
the test session's own local Ray (``ray_session``) and other engineers' runs included.

Each node gets a temporary directory of its own (``--temp-dir``): its sockets and logs, and the
``ray_current_cluster`` file that ``ray start`` writes, which in the default ``/tmp/ray`` would make
every later plain ``ray.init()`` on the machine join this cluster instead of starting its own.

Ray 2.60 turns token authentication on (``ray.init`` of a new cluster always; ``ray start`` when
``~/.ray/auth_token`` exists). Here it is on explicitly: every node and every driver gets
``RAY_AUTH_MODE=token`` and the cluster's own fresh token in ``RAY_AUTH_TOKEN``, which Ray's token
loader takes before any token file, so ``~/.ray/auth_token`` (another Ray's) is neither used nor
written. A driver without the token, or with another, is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RAY = str(Path(sys.executable).with_name("ray"))
# What the nodes are given and what a driver must have to join them; never set in this process.
_RAY_ENV = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, session id) of a process, None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses.
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[3])


def session_pids(sid: int) -> list[int]:
    """Every live process of the process session ``sid``."""
    return [int(name) for name in os.listdir("/proc")
            if name.isdigit() and (stat := _stat(int(name))) and stat[1] == sid and stat[0] != "Z"]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids_titled(part: bytes, suffix: bytes = b"") -> list[int]:
    """Processes on this machine whose title (Ray's ``ray::<actor>[.<method>]``) holds ``part``
    and ends with ``suffix``."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                title = Path(f"/proc/{name}/cmdline").read_bytes().split(b"\0", 1)[0]
            except OSError:
                continue
            if part in title and title.endswith(suffix):
                pids.append(int(name))
    return pids


def camflow_command(command: str, output: str | Path, run_id: str,
                    sets: dict[str, Any]) -> list[str]:
    """``camflow COMMAND --output OUTPUT --run-id RUN_ID --set KEY=VALUE ...`` in this venv."""
    args = [sys.executable, "-m", "flows.cli", command, "--output", str(output), "--run-id", run_id]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args


def _wait_for_calm(limit: float = 60.0) -> None:
    """Wait (at most ``limit`` s) while the machine runs more than two processes per core."""
    deadline = time.monotonic() + limit
    while os.getloadavg()[0] > 2 * (os.cpu_count() or 1) and time.monotonic() < deadline:
        time.sleep(2)


@dataclass
class Node:
    """One ``ray start`` of this harness: its session id, its temp dir, what it was given."""

    name: str
    sid: int
    temp_dir: Path
    args: list[str]
    log: str = ""

    def pids(self) -> list[int]:
        """Every live process of this node (its session)."""
        return session_pids(self.sid)

    def processes(self) -> dict[int, str]:
        """pid -> command line (see :class:`NodeWatch` for what Ray makes of a worker's)."""
        return {pid: cmdline(pid) for pid in self.pids()}

    def raylet_pid(self) -> int:
        found = [pid for pid, cmd in self.processes().items()
                 if cmd.split(" ", 1)[0].endswith("/raylet")]
        if len(found) != 1:
            raise RuntimeError(f"{self.name}: expected one raylet in session {self.sid}, "
                               f"found {found}")
        return found[0]

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM every process of this node, then SIGKILL what is left (new ones included)."""
        deadline = time.monotonic() + grace
        sig = signal.SIGTERM
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if time.monotonic() > deadline:
                sig = signal.SIGKILL
            time.sleep(0.2)


class NodeWatch:
    """Samples the process titles of one node: which actors it hosts, which are at work.

    Ray titles an actor's process ``ray::<actor>`` while it waits and ``ray::<actor>.<method>``
    while it runs a call: ``ray::MapWorker(MapBatches(CamWorker)).submit`` is a CAM actor on a
    shard. :meth:`sample` reads the titles of the node's known processes, cheap enough for every
    few milliseconds; the node's process list itself is refreshed every ``rescan`` seconds.
    """

    def __init__(self, node: Node, rescan: float = 1.0) -> None:
        self.node, self.rescan = node, rescan
        self.titles: set[str] = set()
        self._pids: list[int] = []
        self._scanned = float("-inf")

    def sample(self) -> list[str]:
        if time.monotonic() - self._scanned >= self.rescan:
            self._pids, self._scanned = self.node.pids(), time.monotonic()
        titles = [t.split(" ", 1)[0] for t in map(cmdline, self._pids) if t.startswith("ray::")]
        self.titles.update(titles)
        return titles

    def hosted(self, actor: str) -> bool:
        """Whether an actor whose name holds ``actor`` has had a process on this node."""
        return any(actor in title for title in self.titles)

    @staticmethod
    def busy(titles: list[str], actor: str, method: str = "submit") -> bool:
        return any(actor in t and t.endswith(f".{method}") for t in titles)


@dataclass
class LocalCluster:
    """A head and worker nodes on this machine, all started with the ``ray`` CLI of this venv."""

    token: str = field(default_factory=lambda: secrets.token_hex(32))
    port: int = field(default_factory=free_port)
    nodes: list[Node] = field(default_factory=list)

    dashboard_port: int = 0

    @property
    def jobs_address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    @property
    def address(self) -> str:
        # Ray itself replaces a loopback host by this machine's address (nodes and drivers alike).
        return f"127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _RAY_ENV}
        env.update({
            # This venv's commands first (`camflow`, for the entrypoints of Ray jobs), as in the
            # image, whatever the PATH of the test run.
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token,
            "RAY_USAGE_STATS_ENABLED": "0",
            # A raylet's wait for its runtime-env agent to register; minutes on two busy cores.
            "RAY_agent_register_timeout_ms": "180000",
            # The GCS notices a dead node after a few missed health checks: one a second, so a
            # killed node is found dead in seconds rather than tens of them.
            "RAY_health_check_period_ms": "1000",
        })
        return env

    def driver_env(self, **extra: str) -> dict[str, str]:
        """The environment of a driver process that joins this cluster through RAY_ADDRESS."""
        return {**self._env(), "RAY_ADDRESS": self.address, **extra}

    def _start(self, name: str, args: Callable[[], list[str]], timeout: float,
               attempts: int = 4) -> Node:
        """``ray start`` with ``args()``; a node that does not come up is stopped and retried.

        A raylet waits a fixed 15 s (not configurable in Ray 2.60) for its dashboard agent to
        write the port files it writes once all its modules are imported, and aborts the node
        when they are late (``Timed out waiting for file``). Two cores shared with other work
        make it late: every attempt first waits a while for the machine to calm down.
        """
        for attempt in range(1, attempts + 1):
            _wait_for_calm()
            node = self._start_once(name, args(), timeout)
            if isinstance(node, Node):
                return node
            failed, why = node
            failed.stop()
            self.nodes.remove(failed)
            shutil.rmtree(failed.temp_dir, ignore_errors=True)
            if attempt == attempts:
                raise RuntimeError(f"ray start of {name} failed {attempts} times; the last:\n{why}")
        raise AssertionError("unreachable")

    def _start_once(self, name: str, args: list[str], timeout: float) -> Node | tuple[Node, str]:
        temp_dir = Path(tempfile.mkdtemp(prefix=f"cfray-{name}-"))  # short: socket paths
        # Ports: the agent's would default to a fixed one and the workers' to a fixed range,
        # shared with every other Ray on the machine; let the OS choose them instead.
        cmd = [RAY, "start", *args, "--temp-dir", str(temp_dir), "--disable-usage-stats",
               "--dashboard-agent-listen-port", str(free_port()),
               "--min-worker-port", "0", "--max-worker-port", "0",
               "--object-store-memory", str(256 * 2**20)]
        proc = subprocess.Popen(cmd, env=self._env(), start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        node = Node(name, proc.pid, temp_dir, cmd)
        self.nodes.append(node)  # stopped at teardown even if it fails to come up
        try:
            node.log, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            node.log, _ = proc.communicate()
        if proc.returncode == 0 or (
                # `ray start` itself gives the raylet a fixed 30 s to register; its processes
                # live on after it gives up, and the raylet may yet come up.
                "timed out during startup" in node.log and self._raylet_started(node, timeout)):
            return node
        raylet = temp_dir / "session_latest" / "logs" / "raylet.out"
        tail = raylet.read_text(errors="replace")[-3000:] if raylet.exists() else "(none)"
        return node, (f"exit status {proc.returncode}:\n{node.log[-3000:]}\n"
                      f"--- its raylet.out:\n{tail}")

    @staticmethod
    def _raylet_started(node: Node, timeout: float) -> bool:
        log = node.temp_dir / "session_latest" / "logs" / "raylet.out"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                text = log.read_text(errors="replace")
            except OSError:
                text = ""
            if re.search(r"Raylet of id, \w+ started", text):
                return True
            if "Check failed" in text or not node.pids():
                return False
            time.sleep(0.5)
        return False

    def start_head(self, num_cpus: int = 1, timeout: float = 180, *,
                   dashboard: bool = False) -> Node:
        """The head; with ``dashboard``, its dashboard too, and with it the Jobs API at
        :attr:`jobs_address`."""
        def args() -> list[str]:
            self.port = free_port()  # a fresh GCS port for every attempt
            self.dashboard_port = free_port()
            return ["--head", "--port", str(self.port), "--num-cpus", str(num_cpus),
                    f"--include-dashboard={str(dashboard).lower()}", "--dashboard-host",
                    "127.0.0.1", "--dashboard-port", str(self.dashboard_port),
                    "--ray-client-server-port", str(free_port())]

        return self._start("head", args, timeout)

    def add_worker(self, num_cpus: int = 1, resources: dict[str, float] | None = None,
                   timeout: float = 180) -> Node:
        args = ["--address", self.address, "--num-cpus", str(num_cpus)]
        if resources:
            args += ["--resources", json.dumps(resources)]
        return self._start(f"worker{len(self.nodes)}", lambda: args, timeout)

    def query(self, code: str, timeout: float = 120) -> Any:
        """Run ``code`` in a driver joined to the cluster; it prints one JSON value last."""
        script = "import json, ray\nray.init(log_to_driver=False)\n" + code
        done = subprocess.run([sys.executable, "-c", script], env=self.driver_env(),
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"driver failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    def alive_nodes(self) -> list[dict[str, Any]]:
        """Ray's view of its live nodes: id, raylet socket, resources."""
        return self.query(
            "print(json.dumps([{'id': n['NodeID'], 'raylet': n['RayletSocketName'],"
            " 'resources': n['Resources']} for n in ray.nodes() if n['Alive']]))")

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        for node in self.nodes:
            shutil.rmtree(node.temp_dir, ignore_errors=True)
        self.nodes.clear()
