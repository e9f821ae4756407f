"""ImportBackup and ExportBackup (streaming calls) in a child process, their bytes over its stdin/stdout.

Why a child: cinder-backup runs under eventlet, where this package makes one gRPC call at a time in a
native thread (client.py: grpcio holds eventlet's green locks, which two native threads cannot share). A
copy of a volume is one call that lasts as long as the copy; made in the process, it would hold every
other call of the driver (the status checks and job polls of the other backups and restores) for that
long. The child is an unpatched interpreter with its own channel; the parent only reads and writes
pipes, which it can do from a native thread without touching gRPC.

Protocol (parent -> child, on stdin): one JSON line {"config": ClientConfig fields, "request": base64 of
the serialized ImportBackupHeader or ExportBackupRequest}; for an import, the `rbd export-diff` stream's
bytes follow. An export's child writes {"started": job_id} to its stderr as soon as the stream names
its job (started_job() reads it while the copy runs). The child finds the leader first (GetCoordinatorStatus: a standby names it), so the call
goes where mutating calls are taken. Child -> parent: an import's answer on stdout, an export's stream bytes on stdout and its
answer on stderr — one JSON line each (the last of its output), {"job": base64 Job} / {"job_id": ...} or {"code": "NOT_FOUND",
"details": "..."}. The streaming call itself has no retry (the stream is read once); its deadline is the
caller's.

Who may call what is the coordinator's: ImportBackup needs the admin role or an operator whose scopes
confine it (backup_service.proto), ExportBackup an operator.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from typing import IO, Iterator

import grpc

from rbdbackup.v1 import backup_service_pb2 as pb

from .config import ClientConfig

# The size of each data message of an import (the coordinator takes up to its gRPC message limit).
MESSAGE_BYTES = 1 << 20
# How long the child may take to end once its output was read, seconds.
END_WAIT_S = 60.0
_HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class RelayError(Exception):
    """The child's call failed: its gRPC status name and details (or why the child itself failed)."""

    def __init__(self, code: str, details: str):
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


def start(kind: str, config: ClientConfig, request, timeout: float) -> subprocess.Popen:
    """Starts the child for `kind` ("import" or "export") and sends it the config and the request; its
    call's deadline is `timeout` seconds (the child then answers DEADLINE_EXCEEDED and ends)."""
    if kind not in ("import", "export"):
        raise ValueError(kind)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([_HERE] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    err = None if kind == "import" else tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "rbdbackup_client.relay", kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        # An import's answer is its last stdout line, and whatever the child printed before it (a
        # traceback) goes with it into the error; an export's stdout is the stream, its stderr goes to a
        # file read after it (a pipe nobody reads while the stream flows could fill and stop the child).
        stderr=subprocess.STDOUT if err is None else err,
        env=env,
        close_fds=True,
    )
    assert proc.stdin is not None
    proc.stderr_file = err  # read back by errors() (a temporary file: gone once collected)
    line = {
        "config": dataclasses.asdict(config),
        "request": base64.b64encode(request.SerializeToString()).decode(),
        "timeout": float(timeout),
    }
    proc.stdin.write(json.dumps(line).encode() + b"\n")
    return proc


def wait(proc: subprocess.Popen, timeout: float = END_WAIT_S) -> None:
    """Waits for the child to end once its output was read (bounded: RelayError DEADLINE_EXCEEDED)."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        end(proc)
        raise RelayError("DEADLINE_EXCEEDED", f"the rbdbackup relay process did not end within {timeout:.0f} s "
                                              "of its output; it was killed") from None


def end(proc: subprocess.Popen) -> None:
    """Kills the child if it still runs, reaps it, and closes its pipes and stderr file."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for f in (proc.stdin, proc.stdout, getattr(proc, "stderr_file", None)):
        try:
            if f is not None:
                f.close()
        except OSError:
            pass


def started_job(proc: subprocess.Popen) -> str:
    """The id of the job an export's child reported starting ("" until it did)."""
    for ln in errors(proc).decode(errors="replace").splitlines():
        try:
            got = json.loads(ln)
        except ValueError:
            continue
        if isinstance(got, dict) and got.get("started"):
            return str(got["started"])
    return ""


def errors(proc: subprocess.Popen) -> bytes:
    """What an export's child wrote to its stderr (its answer line last)."""
    f = getattr(proc, "stderr_file", None)
    if f is None or f.closed:
        return b""
    parts, off = [], 0
    while True:  # pread: the file's own offset is the child's, which may still append
        b = os.pread(f.fileno(), 1 << 20, off)
        if not b:
            return b"".join(parts)
        parts.append(b)
        off += len(b)


def answer(raw: bytes, proc: subprocess.Popen) -> dict:
    """The child's answer line (the last line of `raw`), or RelayError when there is none."""
    lines = [ln for ln in raw.decode(errors="replace").splitlines() if ln.strip()]
    for ln in reversed(lines):
        try:
            got = json.loads(ln)
        except ValueError:
            continue
        if isinstance(got, dict) and ("code" in got or "job" in got or "job_id" in got):
            if "code" in got and got["code"] != "OK":
                raise RelayError(got["code"], got.get("details", ""))
            return got
    tail = " | ".join(lines[-3:]) or "nothing"
    raise RelayError("INTERNAL", f"the rbdbackup relay process ended ({proc.returncode}) without an answer: {tail}")


def job_of(got: dict) -> pb.Job:
    return pb.Job.FromString(base64.b64decode(got["job"]))


# --- the child ---------------------------------------------------------------------------------


def _stub(config: ClientConfig):
    """The client (its credentials' metadata) and a stub of the leader: the first coordinator that answers
    GetCoordinatorStatus (retried over the addresses as every call is), or the leader a standby names."""
    from .client import Client
    from .errors import RbdbackupError

    client = Client(config)
    try:
        status = client.get_coordinator_status()
    except RbdbackupError:
        return client, client._stub(client._current)  # the streaming call itself reports what fails
    if status.role == pb.COORDINATOR_ROLE_STANDBY and status.leader_address:
        return client, client._stub(status.leader_address)
    return client, client._stub(client._current)


def _import(config: ClientConfig, header: pb.ImportBackupHeader, data: IO[bytes], timeout: float) -> dict:
    client, stub = _stub(config)

    def messages() -> Iterator[pb.ImportBackupMessage]:
        yield pb.ImportBackupMessage(header=header)
        while True:
            # A full message's worth (the sender's keepalive chunks bound the wait: copy.py KEEPALIVE_S);
            # read1 would pass on each pipe read (64 KiB), 16 times the messages.
            chunk = data.read(MESSAGE_BYTES)
            if not chunk:
                return
            yield pb.ImportBackupMessage(data=chunk)

    job = stub.ImportBackup(messages(), timeout=timeout, metadata=client._metadata)
    return {"job": base64.b64encode(job.SerializeToString()).decode()}


def _export(config: ClientConfig, req: pb.ExportBackupRequest, out: IO[bytes], timeout: float) -> dict:
    client, stub = _stub(config)
    job_id = ""
    for chunk in stub.ExportBackup(req, timeout=timeout, metadata=client._metadata):
        if chunk.job_id and not job_id:
            job_id = chunk.job_id
            # Told at once (stderr, read back by started_job): the parent's status check must not take
            # this restore's own job for another restore of the backup.
            sys.stderr.write(json.dumps({"started": job_id}) + "\n")
            sys.stderr.flush()
        if chunk.data:
            out.write(chunk.data)
    out.flush()
    return {"code": "OK", "job_id": job_id}


def main(argv) -> int:
    kind = argv[1] if len(argv) > 1 else ""
    stdin = sys.stdin.buffer
    report = sys.stdout if kind == "import" else sys.stderr
    try:
        first = json.loads(stdin.readline())
        config = ClientConfig(**first["config"]).validate()
        raw = base64.b64decode(first["request"])
        timeout = float(first["timeout"])
        if kind == "import":
            got = _import(config, pb.ImportBackupHeader.FromString(raw), stdin, timeout)
        elif kind == "export":
            got = _export(config, pb.ExportBackupRequest.FromString(raw), sys.stdout.buffer, timeout)
        else:
            got = {"code": "INVALID_ARGUMENT", "details": f"unknown relay {kind!r}"}
    except grpc.RpcError as e:
        got = {"code": e.code().name, "details": e.details() or ""}
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
        got = {"code": "INTERNAL", "details": f"{type(e).__name__}: {e}"}
    report.write(json.dumps(got) + "\n")
    report.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
