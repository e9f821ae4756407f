"""Errors of the rbdbackup Python client: one class carrying the gRPC status code, so callers branch on
`code` (a grpc.StatusCode), never on message text; JobFailed when a followed job ended without
succeeding."""

from __future__ import annotations

from typing import Optional

import grpc

from rbdbackup.v1 import backup_service_pb2 as pb


class RbdbackupError(Exception):
    """A call to the coordinator failed: `code` is its gRPC status, `details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str, address: str = "", method: str = ""):
        self.code = code
        self.details = details
        self.address = address
        self.method = method
        where = f"rbdbackup coordinator {address}" if address else "rbdbackup coordinator"
        call = f" ({method})" if method else ""
        super().__init__(f"{where}{call}: {code.name}: {details}")


class JobFailed(RbdbackupError):
    """A job ended FAILED or CANCELLED; `job` is its last state, `code` the status named by the job."""

    def __init__(self, job: pb.Job, address: str = ""):
        self.job = job
        state = pb.JobState.Name(job.state)
        code = getattr(grpc.StatusCode, job.error_code, None) if job.error_code else None
        kind = pb.JobKind.Name(job.kind).removeprefix("JOB_KIND_").lower()
        details = f"{kind} job {job.id} ended {state.removeprefix('JOB_STATE_')}"
        if job.error_message:
            details += f": {job.error_message}"
        super().__init__(code or grpc.StatusCode.UNKNOWN, details, address, "WatchJob")


class Stopped(Exception):
    """Client.wait stopped following a job because its caller's `should_stop` said so (the job itself
    goes on: cancelling it is the caller's call); `job` is the last state seen."""

    def __init__(self, job: pb.Job):
        self.job = job
        super().__init__(f"stopped following job {job.id} (last state {pb.JobState.Name(job.state)})")


def status_of(err: BaseException) -> Optional[grpc.StatusCode]:
    """The gRPC status code of a client error (None when it is not one)."""
    if isinstance(err, RbdbackupError):
        return err.code
    if isinstance(err, grpc.RpcError) and hasattr(err, "code"):
        return err.code()
    return None
