"""A real Ray head for the tests that need a cluster: own temp dir, free ports, loopback only, and
stopped at the end together with every process that mentions its folder (and no other)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
from conftest import ROOT

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def process_tree(pid: int) -> list[psutil.Process]:
    """Process ``pid`` and its descendants."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def stop(procs: list[psutil.Process], grace: float = 15) -> None:
    """SIGTERM ``procs``, then SIGKILL whichever are left after ``grace`` s: never any other process."""
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)


def mentions(proc: psutil.Process, text: str) -> bool:
    try:
        return text in " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def token_env(base: Path) -> dict:
    """The environment of a token-authenticated cluster (Ray's default, kept on): a fresh token,
    readable by this user only, in ``base``; Ray's CLI on ``PATH``."""
    token = base / "auth_token"
    token.touch(mode=0o600)
    token.write_text(secrets.token_hex(32))
    return {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def registered_epoch(storage_run: Path) -> int:
    """The epoch of the latest checkpoint Ray Train has registered (0: none yet). A checkpoint
    on disk that the controller has not registered yet is not one a restart resumes from."""
    try:
        snapshot = json.loads((storage_run / "checkpoint_manager_snapshot.json").read_text())
        return snapshot["latest_checkpoint_result"]["metrics"]["epoch"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def start_cli(*args, env: dict | None = None) -> subprocess.Popen:
    log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115  (the process writes it until it ends)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnforge.cli", *map(str, args)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    proc.log = log
    return proc


def output_of(proc: subprocess.Popen) -> str:
    proc.log.seek(0)
    return proc.log.read()


@contextlib.contextmanager
def another_ray_instance(folder: Path) -> Iterator[psutil.Process]:
    """What Ray sees of a second Ray instance on this machine, and nothing more: a process named
    ``raylet`` with a ``--gcs-address`` flag (Ray finds local instances by those), doing nothing."""
    folder.mkdir(parents=True, exist_ok=True)
    binary = folder / "raylet"
    shutil.copy(sys.executable, binary)
    proc = subprocess.Popen([binary, "-c", "import time; time.sleep(3600)", "--gcs-address=127.0.0.1:9"])
    try:
        yield psutil.Process(proc.pid)
    finally:
        proc.kill()
        proc.wait(10)


@dataclass(frozen=True)
class RayHead:
    dashboard: str  # http://127.0.0.1:PORT: ray job submit --address
    gcs: str  # 127.0.0.1:PORT: rnnforge train --address
    base: Path


@contextlib.contextmanager
def local_ray_head(base: Path, env: dict, num_cpus: int = 2, num_gpus: int = 0) -> Iterator[RayHead]:
    """``ray start --head`` on 127.0.0.1 in ``base`` (keep it short: Ray's socket paths must stay
    short) with ``num_gpus`` logical GPUs, its dashboard answering; stopped afterwards."""
    dashboard, gcs = free_port(), free_port()
    ports = {
        "--port": gcs,
        "--dashboard-port": dashboard,
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--ray-client-server-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
    }
    head_log = open(base / "head.log", "w")  # noqa: SIM115  (the Ray head writes it until it stops)
    head = subprocess.Popen(
        [
            BIN / "ray",
            "start",
            "--head",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--dashboard-host",
            "127.0.0.1",
            "--num-cpus",
            str(num_cpus),
            "--num-gpus",
            str(num_gpus),
            "--temp-dir",
            base / "ray",
            *[str(a) for item in ports.items() for a in item],
        ],
        env=env,
        stdout=head_log,
        stderr=subprocess.STDOUT,
        cwd=base,
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        wait_for(
            lambda: "Ray runtime started" in (base / "head.log").read_text() or head.poll() is not None,
            120,
            "ray start --head",
        )
        assert head.poll() is None, (base / "head.log").read_text()

        def dashboard_up():
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2)
            except urllib.error.HTTPError:
                return True  # it answers (perhaps 401 without the token)
            except OSError:
                return False
            return True

        wait_for(dashboard_up, 60, "the dashboard's job server", poll=1)
        yield RayHead(address, f"127.0.0.1:{gcs}", base)
    finally:
        stop(process_tree(head.pid) + [p for p in psutil.process_iter() if mentions(p, str(base))], grace=5)
        head_log.close()


#: The second node's process: Ray's own node start-up, as ``ray start --address`` runs it, minus
#: that command's refusal of a second node under RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, the switch
#: that keeps every address on loopback (without it Ray replaces 127.0.0.1 with the machine's
#: outward address, as ray.cluster_utils.Cluster's nodes do too).
_NODE_MAIN = """
import json, signal, sys
import ray._private.node, ray._private.parameter
params = ray._private.parameter.RayParams(**json.loads(sys.argv[1]))
node = ray._private.node.Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
print("Ray runtime started: node", node.node_id, "at", node.node_ip_address, flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
"""


@dataclass(frozen=True)
class RayNode:
    """A second Ray node of a local head: its ``ray start`` process and its own temp dir."""

    process: subprocess.Popen
    base: Path

    def raylet(self) -> psutil.Process | None:
        """This node's raylet (the process whose death takes the node down)."""
        for proc in process_tree(self.process.pid) + [p for p in psutil.process_iter() if mentions(p, str(self.base))]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                if proc.name() == "raylet" or proc.cmdline()[0].endswith("/raylet"):
                    return proc
        return None


@contextlib.contextmanager
def ray_node(
    head: RayHead, base: Path, env: dict, num_cpus: int = 1, resources: dict | None = None
) -> Iterator[RayNode]:
    """A second node of ``head`` on 127.0.0.1 (``_NODE_MAIN``), with ``num_cpus`` CPUs, custom
    ``resources``, its own temp dir in ``base`` (short), ports and worker-port range; it has
    joined when this yields, and is stopped afterwards with every process that mentions ``base``."""
    base.mkdir(parents=True, exist_ok=True)
    low = 20000 + secrets.randbelow(200) * 100  # workers' ports apart from the head's (10002-19999)
    params = {
        "gcs_address": head.gcs,
        "node_ip_address": "127.0.0.1",
        "num_cpus": num_cpus,
        "num_gpus": 0,
        "resources": resources or {},
        "temp_dir": str(base / "ray"),
        "node_manager_port": free_port(),
        "object_manager_port": free_port(),
        "metrics_agent_port": free_port(),
        "dashboard_agent_listen_port": free_port(),
        "metrics_export_port": free_port(),
        "runtime_env_agent_port": free_port(),
        "min_worker_port": low,
        "max_worker_port": low + 99,
    }
    log = open(base / "node.log", "w")  # noqa: SIM115  (the node writes it until it stops)
    node = subprocess.Popen(
        [sys.executable, "-c", _NODE_MAIN, json.dumps(params)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=base,
    )
    try:
        wait_for(
            lambda: "Ray runtime started" in (base / "node.log").read_text() or node.poll() is not None,
            120,
            "a second Ray node",
        )
        assert node.poll() is None, (base / "node.log").read_text()
        yield RayNode(node, base)
    finally:
        stop(process_tree(node.pid) + [p for p in psutil.process_iter() if mentions(p, str(base))], grace=5)
        log.close()
