"""A thin, typed client of the coordinator's BackupService (stubs generated into dist/python/rbdbackup/v1).

Every unary call has a deadline (config.call_timeout). UNAVAILABLE is retried with backoff, over the
configured addresses in turn; when the answer carries the `rbdbackup-leader` trailer (a standby refusing
a mutating call, see GetCoordinatorStatus in backup_service.proto) the next attempt goes to that leader
at once. Mutating calls are retried only with an idempotency key (the same key never makes a second
job). `wait(job)` follows a job over WatchJob until it ends, re-opening the stream after UNAVAILABLE,
within a deadline. Blocking gRPC work runs in a native thread when eventlet has patched the process
(cinder-backup does), so the hub is never blocked — one call at a time in the process: grpcio, imported
after the patching, holds eventlet's green locks, which two native threads cannot share (two calls at
once from two native threads deadlocked, the second waiter never woken). So there, `wait(job)` polls
GetJob every POLL_S instead of holding a WatchJob stream that would hold every other call behind it.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple, TypeVar

import grpc
import grpc.experimental

from rbdbackup.v1 import agent_pb2, backup_service_pb2 as pb, backup_service_pb2_grpc as rpc

from .backoff import backoff_delay, sleep
from .config import ClientConfig
from .errors import JobFailed, RbdbackupError, Stopped

T = TypeVar("T")
LEADER_TRAILER = "rbdbackup-leader"
FINAL_STATES = (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED)
# Statuses a retryable call is retried on (Client.call).
RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# HTTP/2 keepalive of the channels: a ping after 30 s without a frame, the connection dropped 10 s later.
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
# The host name only a coordinator's certificate names (deploy/tls/gen-certs.sh; src/common/identity.ts).
COORDINATOR_DNS_NAME = "coordinator.rbdbackup.invalid"
# What gRPC's TLS says of a server certificate that does not name the host checked.
_NAME_MISMATCH = ("No match found for server name", "is not in peer certificate", "Peer name")
# Longest single WatchJob stream, seconds (then a new one).
WATCH_STREAM_S = 300.0
# Under eventlet: how often wait() asks GetJob, seconds.
POLL_S = 2.0

# Under eventlet: one gRPC call in a native thread at a time (an eventlet semaphore: green threads wait
# for their turn without blocking the hub). Made on first use.
_grpc_turn = None


def _eventlet_patched() -> bool:
    try:
        from eventlet import patcher
    except ImportError:
        return False
    return patcher.is_monkey_patched("thread")


def _in_native_thread(fn: Callable[[], T]) -> T:
    """Runs fn in eventlet's native thread pool, one at a time, when eventlet patched threading; else here."""
    if not _eventlet_patched():
        return fn()
    global _grpc_turn
    from eventlet import tpool
    from eventlet.semaphore import Semaphore

    if _grpc_turn is None:
        _grpc_turn = Semaphore(1)
    with _grpc_turn:
        return tpool.execute(fn)


def _server_name(configured: Optional[str]) -> str:
    """The host name the coordinator's certificate must name: the configured one, else the name only a
    coordinator's certificate carries (deploy/tls/gen-certs.sh). grpcio checks host names only, and every
    certificate of the deployment's CA names localhost and 127.0.0.1 — an agent's too: checked against the
    address's host, an agent (or anyone holding a server certificate of that CA) could pose as the
    coordinator and collect the driver's token and requests."""
    return configured or COORDINATOR_DNS_NAME


def _leader_of(err: grpc.RpcError) -> Optional[str]:
    try:
        trailers = err.trailing_metadata() or ()
    except Exception:  # noqa: BLE001 - an error without trailers (e.g. connection refused)
        return None
    for key, value in trailers:
        if key == LEADER_TRAILER and value:
            return value
    return None


class Client:
    """BackupService calls with deadlines, UNAVAILABLE retries and leader following."""

    def __init__(self, config: ClientConfig):
        self.config = config.validate()
        self._channels: Dict[str, Tuple[grpc.Channel, rpc.BackupServiceStub]] = {}
        self._current = self.config.addresses[0]
        self._metadata: List[Tuple[str, str]] = (
            [("authorization", f"Bearer {self.config.token}")] if self.config.token else []
        )
        self._credentials = None if self.config.insecure else self._tls_credentials()

    def _tls_credentials(self) -> grpc.ChannelCredentials:
        def read(path: Optional[str], what: str) -> Optional[bytes]:
            if not path:
                return None
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError as e:
                raise ValueError(f"rbdbackup client: cannot read the TLS {what} {path}: {e.strerror}") from e

        c = self.config
        return grpc.ssl_channel_credentials(read(c.ca_file, "CA"), read(c.key_file, "key"), read(c.cert_file, "certificate"))

    def _stub(self, address: str) -> rpc.BackupServiceStub:
        if address not in self._channels:
            # WatchJob streams on the calling thread: grpcio's default runs a Python "channel spin" thread
            # per stream, which eventlet turns into a green thread that never runs (a hang).
            opts = [
                (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1),
                # A coordinator whose host died, or a network that split without closing the connection,
                # is noticed in ~40 s: a WatchJob stream is quiet while its job does not change. (The
                # coordinator accepts pings every 5 s or more.)
                ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
                ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
            ]
            if self._credentials is None:
                channel = grpc.insecure_channel(address, options=opts)
            else:
                opts.append(("grpc.ssl_target_name_override", _server_name(self.config.server_name)))
                channel = grpc.secure_channel(address, self._credentials, options=opts)
            self._channels[address] = (channel, rpc.BackupServiceStub(channel))
        return self._channels[address][1]

    def _error(self, e: grpc.RpcError, address: str, method: str) -> RbdbackupError:
        """The RbdbackupError of a failed call. A server whose certificate does not name the coordinator's
        host name (gRPC reports UNAVAILABLE, as for a coordinator that is down) is UNAUTHENTICATED, not
        retried, and says what to do: a configuration to fix, not an outage to wait out."""
        code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
        details = e.details() if hasattr(e, "details") else str(e)
        if code == grpc.StatusCode.UNAVAILABLE and any(m in (details or "") for m in _NAME_MISMATCH):
            name = _server_name(self.config.server_name)
            return RbdbackupError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"the server's certificate does not name {name}, so it is not taken for a coordinator "
                f"({details}). A coordinator's certificate from deploy/tls/gen-certs.sh names "
                f"{COORDINATOR_DNS_NAME} (run it again to re-issue one made before 2026-12-06, then restart the "
                "coordinator); with certificates from another CA, set rbdbackup_tls_server_name to a name "
                "only the coordinators' certificates carry",
                address,
                method,
            )
        return RbdbackupError(code, details, address, method)

    def close(self) -> None:
        for channel, _ in self._channels.values():
            channel.close()
        self._channels.clear()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_address(self, failed: str) -> str:
        addrs = self.config.addresses
        return addrs[(addrs.index(failed) + 1) % len(addrs)] if failed in addrs else addrs[0]

    def call(self, method: str, request, retry: bool = True, timeout: Optional[float] = None):
        """One unary BackupService call by name; when `retry` (a read, or a call with an idempotency key:
        the same key returns the same job), retries UNAVAILABLE and DEADLINE_EXCEEDED — a CreateBackup
        that probes both clusters may pass its deadline after its job was made, and only a retry learns
        that job — else raises RbdbackupError with the status."""
        attempts = self.config.attempts if retry else 1
        last: Optional[RbdbackupError] = None
        for attempt in range(1, attempts + 1):
            address = self._current
            fn = getattr(self._stub(address), method)
            try:
                return _in_native_thread(
                    lambda: fn(request, timeout=timeout or self.config.call_timeout, metadata=self._metadata)
                )
            except grpc.RpcError as e:
                last = self._error(e, address, method)
                code = last.code
                if code not in RETRIED or attempt == attempts:
                    raise last from None
                leader = _leader_of(e)
                if leader and leader != address:
                    self._current = leader  # a standby named the leader: go there without waiting
                    continue
                if code == grpc.StatusCode.UNAVAILABLE:
                    self._current = self._next_address(address)  # a slow coordinator is asked again
                sleep(backoff_delay(attempt, self.config.backoff_base, self.config.backoff_max))
        assert last is not None
        raise last

    # --- BackupService, typed -------------------------------------------------------------------

    def create_backup(self, req: pb.CreateBackupRequest) -> pb.Job:
        return self.call("CreateBackup", req, retry=bool(req.idempotency_key))

    def restore_backup(self, req: pb.RestoreBackupRequest) -> pb.Job:
        return self.call("RestoreBackup", req, retry=bool(req.idempotency_key))

    def delete_backup(self, backup_id: str, idempotency_key: str = "") -> pb.Job:
        req = pb.DeleteBackupRequest(backup_id=backup_id, idempotency_key=idempotency_key)
        return self.call("DeleteBackup", req, retry=bool(idempotency_key))

    def cancel_job(self, job_id: str) -> pb.Job:
        return self.call("CancelJob", pb.CancelJobRequest(job_id=job_id))

    def get_backup(self, backup_id: str) -> pb.Backup:
        return self.call("GetBackup", pb.GetBackupRequest(backup_id=backup_id))

    def get_job(self, job_id: str) -> pb.Job:
        return self.call("GetJob", pb.GetJobRequest(job_id=job_id))

    def _all_pages(self, method: str, request_type, field: str, filters: dict) -> list:
        """Every item of a paged listing (`method`, its request type, the response's repeated `field`)."""
        out: list = []
        token = ""
        while True:
            r = self.call(method, request_type(page_token=token, **filters))
            out.extend(getattr(r, field))
            token = r.next_page_token
            if not token:
                return out

    def list_backups(self, **filters) -> List[pb.Backup]:
        """Every backup matching the filters (ListBackupsRequest fields), following the pages."""
        return self._all_pages("ListBackups", pb.ListBackupsRequest, "backups", filters)

    def list_jobs(self, **filters) -> List[pb.Job]:
        """Every job matching the filters (ListJobsRequest fields), following the pages."""
        return self._all_pages("ListJobs", pb.ListJobsRequest, "jobs", filters)

    def check_cluster(self, cluster: str, backup_pool: str = "") -> agent_pb2.ClusterCheckResponse:
        return self.call("CheckCluster", pb.CheckClusterRequest(cluster=cluster, backup_pool=backup_pool))

    def export_backup_record(self, backup_id: str) -> pb.BackupRecord:
        return self.call("ExportBackupRecord", pb.ExportBackupRecordRequest(backup_id=backup_id))

    def import_backup_record(self, record: pb.BackupRecord) -> pb.Backup:
        # Safe to retry: a second import of the same record is ALREADY_EXISTS, never a copy.
        return self.call("ImportBackupRecord", pb.ImportBackupRecordRequest(record=record))

    def get_coordinator_status(self) -> pb.CoordinatorStatus:
        return self.call("GetCoordinatorStatus", pb.GetCoordinatorStatusRequest())

    # --- following a job ------------------------------------------------------------------------

    def _watch(self, job_id: str, remaining: float, on_event: Callable[[pb.Job], None]) -> Optional[pb.Job]:
        """One WatchJob stream: the final job, or None when the stream ended early."""
        address = self._current
        # At most WATCH_STREAM_S per stream, then a new one (WatchJob sends the job as it is first).
        stream: Iterable[pb.JobEvent] = self._stub(address).WatchJob(
            pb.WatchJobRequest(job_id=job_id), timeout=min(remaining, WATCH_STREAM_S), metadata=self._metadata
        )
        try:
            for event in stream:
                on_event(event.job)
                if event.job.state in FINAL_STATES:
                    return event.job
        except grpc.RpcError as e:
            raise self._error(e, address, "WatchJob") from None
        return None

    def _poll(self, job_id: str, window: float, on_event: Callable[[pb.Job], None]) -> Optional[pb.Job]:
        """Under eventlet: GetJob every POLL_S for `window` seconds (each call bounded by call_timeout):
        the final job, or None once the window has passed."""
        end = time.monotonic() + window
        while True:
            left = end - time.monotonic()
            j = self.call("GetJob", pb.GetJobRequest(job_id=job_id), retry=False,
                          timeout=min(self.config.call_timeout, max(left, 1.0)))
            on_event(j)
            if j.state in FINAL_STATES:
                return j
            left = end - time.monotonic()
            if left <= 0:
                return None
            sleep(min(POLL_S, left))

    def wait(
        self,
        job: pb.Job,
        timeout: float,
        on_event: Optional[Callable[[pb.Job], None]] = None,
        raise_on_failure: bool = True,
        should_stop: Optional[Callable[[], bool]] = None,
        check_interval: float = 10.0,
    ) -> pb.Job:
        """Follows `job` until it ends, at most `timeout` seconds: the SUCCEEDED job, or JobFailed (a
        FAILED or CANCELLED job), or RbdbackupError DEADLINE_EXCEEDED naming the last state seen.

        `should_stop`, when given, is asked before the job is watched and then every `check_interval`
        seconds, on the calling thread (it may read Cinder's database; the watch itself runs in a native
        thread): True raises Stopped with the last state seen — the job goes on unless the caller cancels
        it."""
        deadline = time.monotonic() + timeout
        last = job
        attempt = 0
        # Since when no coordinator has answered: UNAVAILABLE, and calls that ended without a word (a
        # coordinator that accepts calls but never answers them: its catalog hung) alike.
        unreachable_since: Optional[float] = None
        answered_at = time.monotonic()

        def seen(j: pb.Job) -> None:
            nonlocal last, unreachable_since, answered_at
            last = j
            unreachable_since = None  # a coordinator answered: an outage later is counted from its start
            answered_at = time.monotonic()
            if on_event:
                on_event(j)

        while last.state not in FINAL_STATES:
            if should_stop is not None and should_stop():
                raise Stopped(last)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RbdbackupError(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"job {job.id} did not end within {timeout:.0f} s (last state "
                    f"{pb.JobState.Name(last.state)}, phase {last.progress.phase or '-'})",
                    self._current,
                    "WatchJob",
                )
            # With should_stop, each watch lasts at most check_interval: its end is a check, not a retry.
            window = min(remaining, check_interval) if should_stop is not None else remaining
            opened = time.monotonic()
            try:
                if _eventlet_patched():
                    final = self._poll(job.id, window, seen)
                    if final is None:
                        continue  # the window passed: a check (should_stop), then polled on
                else:
                    final = _in_native_thread(lambda: self._watch(job.id, window, seen))
                unreachable_since = None
                if final is not None:
                    break
            except RbdbackupError as e:
                # Nothing came back during this call (no event, no job): it counts as unreachable.
                silent = answered_at < opened
                # The check's window ran out (not the job's time), with answers during it: check, then
                # watch again. A DEADLINE_EXCEEDED well before the window's end came from elsewhere:
                # retried with backoff.
                if (
                    e.code == grpc.StatusCode.DEADLINE_EXCEEDED
                    and not silent
                    and window < remaining
                    and time.monotonic() - opened >= window * 0.9
                ):
                    continue
                if e.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                if e.code == grpc.StatusCode.UNAVAILABLE or silent:
                    now = time.monotonic()
                    unreachable_since = opened if unreachable_since is None else unreachable_since
                    if now - unreachable_since >= self.config.unreachable_timeout:
                        raise RbdbackupError(
                            grpc.StatusCode.UNAVAILABLE,
                            f"no coordinator answered for {now - unreachable_since:.0f} s while following job "
                            f"{job.id} (last state {pb.JobState.Name(last.state)}): {e.details}",
                            self._current,
                            "WatchJob",
                        ) from None
                    self._current = self._next_address(self._current)
            attempt += 1
            sleep(min(backoff_delay(attempt, self.config.backoff_base, self.config.backoff_max),
                      max(0.0, deadline - time.monotonic())))
        if raise_on_failure and last.state != pb.JOB_STATE_SUCCEEDED:
            raise JobFailed(last, self._current)
        return last
