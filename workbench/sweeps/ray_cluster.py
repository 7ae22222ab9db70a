"""Studies on an existing Ray cluster: joining it, what each trial reserves, and how run folders reach the study.

Workflow (``backend: ray``)::

    ray start --head --port 6379                       # on the head node (or reuse a running cluster)
    ray start --address <head>:6379                    # on every other node
    workbench sweep study.yaml                         # on a cluster node, study.yaml with ray_address: <head>:6379

On one machine, a cluster that listens on 127.0.0.1 only: ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray start --head
--node-ip-address 127.0.0.1 --port 6379`` and ``ray_address: 127.0.0.1:6379``.

**Joining** (:func:`join_cluster`). ``ray_address`` is the head node's GCS address ``host:port`` or ``auto``.
Before ``ray.init`` the address is asked over gRPC for the cluster's nodes (Ray's own GCS service, a
10-second deadline), so an address where nothing answers, or where something other than a Ray cluster answers,
ends in one line naming the address and what to check -- never in Ray's minutes of retries or its abort. A
``ray://`` (Ray Client) address is refused: Tune's driver runs where the study runs, so the study must run on a
node of the cluster. The driver's own node address is ``ray_node_ip``; by default 127.0.0.1 when
``ray_address`` is a loopback address (then Ray keeps it instead of swapping in the machine's interface
address, see :class:`~workbench.sweeps.ray_backend._LoopbackStart`), else Ray's choice. The driver must run on
a node of the cluster: if none of the cluster's nodes has the driver's address, the error says which
addresses it has. A cluster that asks for Ray's authentication token (``ray start`` turns it on) gets the one
found here (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, as Ray looks it up); without
one, the error says to copy the head node's.

**Resources** (``resources_per_trial``, default ``{cpu: 1, gpu: 0}``): each Ray trial reserves them
(``tune.with_resources``); ``gpu: 1`` gives a trial one GPU of its own (Ray sets ``CUDA_VISIBLE_DEVICES`` and
``train.device: auto`` picks it); with ``gpu: 0`` a trial whose ``train.device`` is ``auto`` trains on the CPU
(Ray leaves every GPU visible to it: it would crowd onto GPU 0). A request no node can hold is refused before
Tune starts (:func:`check_resources`), instead of Tune waiting for it forever.

**Run folders.** Ray (>= 2.7) does not copy files between nodes by itself: Tune's ``storage_path`` must be a
filesystem every node shares or cloud storage, and only what a trial reports as a checkpoint (or syncs as an
artifact) is copied there [Ray docs, "Configuring Persistent Storage"]. Two set-ups follow:

* ``ray_storage: null`` (default): every trial writes its run folder straight into ``<study>/runs``, as with a
  local Ray. On a cluster this needs the study folder on a filesystem all nodes mount at the same path; a trial
  on a node that does not see the study folder fails with a message saying so.
* ``ray_storage: /mnt/shared/ray`` or ``s3://bucket/prefix``: a trial trains in its node-local Tune working
  directory (under that node's Ray temp folder) and hands the finished run folder(s) to Tune as the trial's
  checkpoint with its last report; Tune copies it to ``<ray_storage>/<study name>/trial_<id>/checkpoint_000000``
  and, when the trial ends, the driver copies it into ``<study>/runs/<run id>`` (:func:`fetch_runs`, pyarrow's
  filesystems as Ray uses them) and records that path. The node-local folder is deleted once handed over.
  A trial stopped early (pruned or stopped) sends no checkpoint: its record keeps ``node_run_path`` (the
  folder on its node) and ``run_path: null``.

Every trial record carries ``node_id`` and ``node_ip`` (where it ran). A trial whose worker or node dies is
started again on any node up to ``max_failures`` times (Tune's ``FailureConfig``); it is recorded once, when it
ends. Shared between nodes: the study's settings (sent with each trial) and Tune's storage (``ray_storage``),
or the study folder itself (default). Not shared: the data (each node reads ``data.root`` at the same path;
digits, moons and the other built-in sets need nothing), the workbench and Ray installations (the same versions
on every node), and the run folders of trials stopped early with ``ray_storage`` (they stay on their node).

No UI imports.
"""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any

__all__ = ["RayClusterError", "JOIN_TIMEOUT_S", "parse_address", "cluster_nodes", "join_cluster",
           "check_resources", "trial_node", "fetch_runs"]

#: Seconds the cluster address may take to answer the node query before joining is given up.
JOIN_TIMEOUT_S = 10.0


class RayClusterError(OSError):
    """The Ray cluster named by the study cannot be used; the message is one line (the CLI prints it)."""


def _one_line(e: BaseException | str, limit: int = 300) -> str:
    text = e if isinstance(e, str) else (str(e) or type(e).__name__)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_address(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a ``host:port`` cluster address; None for ``auto``.

    Raises:
        RayClusterError: a Ray Client address (``ray://``), a URL, or no ``host:port`` with a port in 1-65535.
    """
    a = str(address).strip()
    if a == "auto":
        return None
    if a.startswith("ray://"):
        raise RayClusterError(
            f"ray_address {a!r} is a Ray Client address: run the study on a node of the cluster (e.g. the head "
            f"node, or with 'ray job submit') and give the head's GCS address host:port (default port 6379) or auto")
    if "://" in a:
        raise RayClusterError(f"ray_address {a!r} is a URL: give the head node's GCS address host:port "
                              f"(ray start --head prints it; default port 6379) or auto")
    host, sep, port = a.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RayClusterError(f"ray_address {a!r} is not host:port: give the head node's GCS address "
                              f"(ray start --head prints it; default port 6379) or auto")
    return host, int(port)


def cluster_nodes(address: str, timeout: float = JOIN_TIMEOUT_S) -> list[dict]:
    """The alive nodes of the Ray cluster whose GCS listens at ``address`` (``host:port``).

    One gRPC call to the GCS's node service (``GetAllNodeInfo``, Ray's generated stubs), with a deadline.

    Returns:
        ``[{"node_id": hex, "ip": str, "head": bool, "resources": {name: amount}}]``; None when the cluster
        asks for an authentication token (Ray's token authentication, on by default for ``ray start``).

    Raises:
        RayClusterError: nothing answers (refused, unreachable, deadline), or the answer is not a Ray GCS's.
    """
    import grpc
    from ray.core.generated import gcs_pb2, gcs_service_pb2, gcs_service_pb2_grpc

    host, port = parse_address(address) or ("", 0)
    hint = (f" -- check that the cluster is running ('ray status --address {address}' on a node of it), that this "
            f"is the head node's GCS address (ray start --head prints it; default port 6379), and that this machine "
            f"can reach it")
    try:  # a closed port answers at once; gRPC would retry it until its deadline
        socket.create_connection((host, port), timeout=timeout).close()
    except ConnectionRefusedError:
        raise RayClusterError(f"Ray cluster at {address}: nothing listens there (connection refused){hint}") from None
    except OSError:
        pass  # unresolvable, unreachable or slow: gRPC says which below
    channel = grpc.insecure_channel(f"{host}:{port}" if ":" not in host else f"[{host}]:{port}")
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        reply = stub.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), timeout=timeout)
    except grpc.RpcError as e:
        code = e.code() if hasattr(e, "code") else None
        if code == grpc.StatusCode.UNAUTHENTICATED:  # token authentication on: ray.init presents the token
            return None
        details = (e.details() if hasattr(e, "details") else None) or ""
        if code == grpc.StatusCode.UNIMPLEMENTED or "HTTP/2" in details or "Socket closed" in details:
            what = "something answers there, but not a Ray cluster's GCS"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            what = f"no answer within {timeout:g} s"
        elif "refused" in details.lower():
            what = "nothing listens there (connection refused)"
        else:
            what = "it cannot be reached" + (f" ({_one_line(details.split('last error:')[-1], 120)})"
                                             if details else "")
        raise RayClusterError(f"Ray cluster at {address}: {what}{hint}") from None
    finally:
        channel.close()
    out = []
    for n in reply.node_info_list:
        if n.state != gcs_pb2.GcsNodeInfo.ALIVE:
            continue
        out.append({"node_id": n.node_id.hex(), "ip": n.node_manager_address, "head": bool(n.is_head_node),
                    "resources": dict(n.resources_total)})
    return out


def _use_token(address: str) -> None:
    """Present Ray's authentication token to a cluster that asks for one.

    Sets ``RAY_AUTH_MODE=token`` in this process, as Ray does for a cluster it finds itself; the token comes from
    ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``.

    Raises:
        RayClusterError: no token here, or ``RAY_AUTH_MODE`` set to something else.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is None:
        try:
            from ray._private.authentication.authentication_token_setup import (
                maybe_enable_token_auth_if_token_available,
            )
        except ImportError:  # another Ray version: the documented environment variable
            os.environ["RAY_AUTH_MODE"] = "token"
            return
        if maybe_enable_token_auth_if_token_available(warn_if_disabled=False):
            return
    elif mode.lower() == "token":
        return
    raise RayClusterError(
        f"the Ray cluster at {address} asks for an authentication token"
        + (f" but RAY_AUTH_MODE={mode} here" if mode else " and none is set here")
        + " -- copy the head node's ~/.ray/auth_token to this machine (or set RAY_AUTH_TOKEN) and unset "
          "RAY_AUTH_MODE or set it to token")


def _driver_ip(study, host: str | None) -> str | None:
    if study.ray_node_ip:
        return str(study.ray_node_ip)
    return "127.0.0.1" if _is_loopback(host) else None


def join_cluster(ray, study) -> list[dict]:
    """Connect this process (the study's driver) to the cluster at ``study.ray_address``.

    Returns:
        The cluster's alive nodes (see :func:`cluster_nodes`; empty for ``auto`` or with token authentication).
        A cluster that asks for Ray's authentication token gets it (see :func:`_use_token`).

    Raises:
        RayClusterError: one line naming the address and what to check (bad address, nothing or no Ray cluster
            answering, no node of the cluster at the driver's address, or ``ray.init`` failing).
    """
    from .ray_backend import _LoopbackStart

    address = str(study.ray_address).strip()
    parsed = parse_address(address)
    host = parsed[0] if parsed else None
    nodes = cluster_nodes(address) if parsed else []
    if nodes is None:
        _use_token(address)
        nodes = []
    node_ip = _driver_ip(study, host)
    if nodes and node_ip and node_ip not in {n["ip"] for n in nodes}:
        ips = ", ".join(sorted({n["ip"] for n in nodes}))
        raise RayClusterError(
            f"Ray cluster at {address}: none of its nodes has this driver's address {node_ip} (its nodes: {ips}) "
            f"-- run the study on a node of the cluster and set ray_node_ip to that node's address as the cluster "
            f"knows it (a cluster started with --node-ip-address 127.0.0.1 is reached at 127.0.0.1)")
    opts: dict[str, Any] = dict(address=address, log_to_driver=False, ignore_reinit_error=True,
                                logging_level=logging.WARNING)
    if node_ip:
        opts["_node_ip_address"] = node_ip
    # a loopback driver address stays loopback only with Ray's cluster switch off during ray.init
    guard = _LoopbackStart() if _is_loopback(node_ip) else contextlib.nullcontext()
    env = {k: os.environ.get(k) for k in ("RAY_gcs_server_port_wait_time_s",)}
    try:
        with guard:
            os.environ["RAY_gcs_server_port_wait_time_s"] = "10"  # GCS connect attempts (~1 s apart), not 150
            ray.init(**opts)
    except Exception as e:
        try:
            ray.shutdown()
        except Exception:
            pass
        cause = e.__cause__ or e
        last = [ln for ln in str(cause).splitlines() if ln.strip()][-1:] or [type(cause).__name__]  # no traceback
        raise RayClusterError(
            f"could not join the Ray cluster at {address} as node {node_ip or '(Ray chooses)'}: {_one_line(e, 160)}"
            + (f" ({_one_line(last[0], 200)})" if cause is not e else "")
            + " -- check that the study runs on a node of the cluster, that ray_node_ip is this node's address as "
              "the cluster knows it, and that Ray's version here matches the cluster's") from None
    finally:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nodes


def check_resources(ray, resources: dict, address: str | None) -> None:
    """Refuse a ``resources_per_trial`` that no alive node of the connected cluster can hold.

    Raises:
        RayClusterError: one line with the request and the largest node's resources.
    """
    want = {("CPU" if k == "cpu" else "GPU" if k == "gpu" else k): v for k, v in resources.items() if v > 0}
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if any(all(n.get("Resources", {}).get(k, 0.0) >= v for k, v in want.items()) for n in nodes):
        return
    have = "; ".join(", ".join(f"{k} {v:g}" for k, v in sorted(n.get("Resources", {}).items())
                               if k in ("CPU", "GPU") or k in want) for n in nodes[:4]) or "no alive node"
    where = f"the Ray cluster at {address}" if address else "the local Ray"
    raise RayClusterError(
        f"resources_per_trial {', '.join(f'{k}: {v:g}' for k, v in resources.items())} fits on no node of {where} "
        f"(nodes: {have}) -- lower it, or add a node with those resources (ray start --num-gpus ...)")


# ------------------------------------------------------------------ in a trial
def trial_node() -> dict:
    """``{"node_id": hex, "node_ip": str}`` of the node this Ray worker runs on."""
    import ray

    try:
        node_id = ray.get_runtime_context().get_node_id()
    except Exception:  # pragma: no cover - outside Ray
        node_id = None
    try:
        ip = ray.util.get_node_ip_address()
    except Exception:  # pragma: no cover
        ip = None
    return {"node_id": node_id, "node_ip": ip}


def local_runs_folder(trial_dir_name: str) -> Path:
    """The node-local folder a trial trains its run folder(s) in when ``ray_storage`` is set.

    It is ``workbench-runs/<trial_dir_name>`` in the trial's Tune working directory (under the node's Ray temp
    folder; Tune makes it the current directory).
    """
    return Path(os.getcwd()) / "workbench-runs" / trial_dir_name


def hand_over(folder: Path):
    """A Tune checkpoint of ``folder`` (the trial's run folders), for its last report."""
    from ray.tune import Checkpoint

    return Checkpoint.from_directory(str(folder))


def drop_local(folder: Path) -> None:
    """Delete a trial's node-local run folders once Tune has copied them to storage."""
    shutil.rmtree(folder, ignore_errors=True)


# ------------------------------------------------------------------ in the driver
def fetch_runs(checkpoint, records: list[dict], runs_dir: Path) -> None:
    """Copy the run folders of a trial's Tune ``checkpoint`` into ``runs_dir`` and point ``records`` at them.

    Each record whose ``run_path`` (the folder on its node) is in the checkpoint gets ``run_path`` =
    ``runs_dir/<run id>`` (its ``config.json`` re-rooted there) and ``node_run_path`` = the node-local path.
    A record whose folder is not in the checkpoint (none sent: a pruned or stopped trial) gets ``run_path``
    None. Copies with pyarrow's filesystems (a local path or a storage URI, as Ray stores it).
    """
    import pyarrow.fs as pafs

    for rec in records:
        node_path = rec.get("run_path")
        if not node_path:
            continue
        rec["node_run_path"] = node_path
        rec["run_path"] = None
        if checkpoint is None:
            continue
        name = Path(str(node_path)).name
        src = f"{checkpoint.path.rstrip('/')}/{name}"
        try:
            info = checkpoint.filesystem.get_file_info(src)
        except Exception:
            continue
        if info.type != pafs.FileType.Directory:
            continue
        dest = Path(runs_dir) / name
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        pafs.copy_files(src, str(dest), source_filesystem=checkpoint.filesystem,
                        destination_filesystem=pafs.LocalFileSystem())
        (dest / ".lock").unlink(missing_ok=True)  # the trainer's advisory lock file, not part of the run
        _reroot(dest)
        rec["run_path"] = str(dest)


def _reroot(run_folder: Path) -> None:
    """``root`` in the run's ``config.json``: the folder it now lies in (it was the node-local one)."""
    from ..runs.store import Run

    run = Run(run_folder)
    cfg = run.config()
    run.write_config(cfg.with_overrides({"root": str(run_folder.parent)}))
