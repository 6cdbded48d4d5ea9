"""Where a run lives: its run dir and its copy in Ray Train's storage.

``prepare_run_dir`` checks ``--run-dir`` before any work: it refuses to clobber a finished run
(unless ``--overwrite``), and tells an interrupted run, which Ray Train resumes from its last
checkpoint, from a new one. ``storage_location`` says where Ray Train keeps a run's checkpoints;
``check_storage`` refuses node-local storage on a multi-node cluster, and
``check_shared_storage`` checks that every node of a cluster sees a ``--shared-storage`` directory.
"""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from rnnforge.core.errors import UserError, first_line
from rnnforge.core.run_dir import RunDir
from rnnforge.core.tracking import record_path

#: Filesystem types that several machines can mount (``/proc/mounts``); ``fuse.*`` counts too.
SHARED_FILESYSTEMS = {
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "lustre",
    "gpfs",
    "beegfs",
    "ceph",
    "glusterfs",
    "wekafs",
    "panfs",
    "gfs2",
    "ocfs2",
    "orangefs",
}


def check_storage(storage: str, nodes: int, declared_shared: bool = False) -> None:
    """Refuse node-local storage on a multi-node cluster: every worker writes checkpoints there
    and the driver reads them back, so every node must see the same files. ``declared_shared``
    (``--shared-storage``): the user says it is shared; ``check_shared_storage`` then checks
    that every node sees it."""
    if nodes < 2 or declared_shared or ("://" in storage and not storage.startswith("file://")):
        return
    fstype = filesystem_type(Path(storage.removeprefix("file://")))
    if fstype in SHARED_FILESYSTEMS or fstype.startswith("fuse."):
        return
    raise UserError(
        f"Ray Train storage {storage} is on this node's own disk ({fstype}) but the Ray cluster has "
        f"{nodes} nodes: workers on other nodes could not write checkpoints there; pass --storage-path "
        "with a shared filesystem mounted at the same path on every node (add --shared-storage where "
        "its type is not one of the known network filesystems), or an s3:// or gs:// URI"
    )


def filesystem_type(path: Path) -> str:
    """The type (``ext4``, ``nfs4``, ...) of the filesystem holding ``path``, from /proc/mounts."""
    path = path.resolve()
    best, fstype = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return fstype
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        if len(mount) >= len(best) and (str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")):
            best, fstype = mount, fields[2]
    return fstype


def storage_location(storage_path: str | None, run: RunDir) -> tuple[str, str]:
    """Ray Train's ``(storage_path, name)`` for a run: RUN_DIR/checkpoints/train by default,
    STORAGE/<run dir's name> with ``--storage-path``."""
    if storage_path:
        return storage_path, run.path.name
    return str(run.checkpoints), "train"


def _storage_fs(uri: str):
    """The pyarrow filesystem of ``uri`` (a URI or an absolute path) and the path inside it."""
    import pyarrow.fs

    try:
        return pyarrow.fs.FileSystem.from_uri(uri)
    except (OSError, ValueError) as exc:
        raise UserError(f"--storage-path {uri}: {first_line(exc)}") from None


def prepare_run_dir(path: Path, overwrite: bool, storage_path: str | None = None) -> Path:
    """Check ``--run-dir`` before any work: refuse to clobber a finished run unless ``overwrite``.

    A run without config.json whose Ray Train storage holds checkpoints is an interrupted run:
    Ray Train resumes it from its last checkpoint. ``overwrite`` also clears ``storage_path``'s
    copy of the run.
    """
    run = RunDir(Path(path).resolve())
    fs, stored_run = _storage_fs("/".join(storage_location(storage_path, run)))
    interrupted = fs.get_file_info(stored_run).type.name == "Directory"
    if run.path.exists() and not run.path.is_dir():
        raise UserError(f"--run-dir {run.path} is a file, expected a directory")
    if run.config.exists():
        if not overwrite:
            raise UserError(
                f"--run-dir {run.path} already holds a finished run; "
                "pass --overwrite to replace it or choose another --run-dir"
            )
        for artifact in run.artifacts():
            if artifact.is_dir():
                shutil.rmtree(artifact)
            elif artifact.exists():
                artifact.unlink()
        record_path(run.path).unlink(missing_ok=True)  # the new run gets its own MLflow run
        if storage_path and interrupted:
            fs.delete_dir(stored_run)
    elif interrupted:
        print(f"resuming the interrupted run in {run.path} from its last checkpoint", flush=True)
    return run.path


def check_shared_storage(storage: str, nodes: list[dict]) -> None:
    """Refuse ``--shared-storage`` when a node of the cluster (``ray.nodes()``'s alive entries)
    does not see the file the driver writes into the local directory ``storage``: a mount missing
    there would make its workers' checkpoints vanish. A URI (s3://, gs://) is shared by nature."""
    if "://" in storage and not storage.startswith("file://"):
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder = Path(storage.removeprefix("file://"))
    folder.mkdir(parents=True, exist_ok=True)
    marker, token = folder / f".rnnforge-shared-{secrets.token_hex(4)}", secrets.token_hex(16)
    marker.write_text(token)
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(_reads)
        seen = _gather(
            [
                probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(
                    str(marker)
                )
                for node in nodes
            ]
        )
    finally:
        marker.unlink(missing_ok=True)
    blind = [node for node, text in zip(nodes, seen) if text != token]
    if blind:
        raise UserError(
            f"--shared-storage: node {blind[0]['NodeManagerAddress']} ({blind[0]['NodeID'][:12]}) does not see "
            f"{folder}: mount the shared directory at the same path on every node"
        )


def _gather(refs: list, timeout: float = 120) -> list:
    """The probes' answers; a node that cannot run one within ``timeout`` s is refused."""
    import ray

    try:
        return ray.get(refs, timeout=timeout)
    except ray.exceptions.RayError as exc:  # GetTimeoutError included
        raise UserError(
            f"--shared-storage: not every node answered the check of the storage ({type(exc).__name__})"
        ) from None


def _reads(path: str) -> str | None:
    """On one node: the text of ``path``, ``None`` where it does not exist there."""
    try:
        return Path(path).read_text()
    except OSError:
        return None
