"""rbdbackup_client against a stand-in standby coordinator (a Python gRPC server with the lab's
coordinator certificate) and the lab's real coordinator: leader following through the
`rbdbackup-leader` trailer, UNAVAILABLE retries over the addresses, no retry of a mutating call without
an idempotency key, and wait() over WatchJob (deadline, re-opening after UNAVAILABLE, failed jobs).

Run in its own process (no eventlet: cinder's test package monkey-patches on import), through
cinder.test.ts."""

from __future__ import annotations

import socket
import threading
import time
import unittest
import uuid
from concurrent import futures

import grpc

from lab import test_config
from rbdbackup.v1 import backup_service_pb2_grpc as rpc
from rbdbackup_client import Client, ClientConfig, JobFailed, RbdbackupError, backup_service_pb2 as pb, relay

CFG = test_config()


class Standby(rpc.BackupServiceServicer):
    """Refuses GetBackup/CreateBackup as a standby naming `leader`; WatchJob plays `script`."""

    def __init__(self, leader: str):
        self.leader = leader
        self.calls: list = []
        self.script: list = []  # per WatchJob call: list of Job states, or "unavailable"
        self.stop = threading.Event()

    def _standby(self, context, method):
        self.calls.append((method, dict(context.invocation_metadata())))
        if self.leader:
            context.set_trailing_metadata((("rbdbackup-leader", self.leader), ("rbdbackup-leader-id", "c1")))
        context.abort(grpc.StatusCode.UNAVAILABLE, "this coordinator is a standby")

    def GetBackup(self, request, context):
        self._standby(context, "GetBackup")

    def CreateBackup(self, request, context):
        self._standby(context, "CreateBackup")

    def ExportBackup(self, request, context):
        self._standby(context, "ExportBackup")

    def GetCoordinatorStatus(self, request, context):
        self.calls.append(("GetCoordinatorStatus", {}))
        return pb.CoordinatorStatus(role=pb.COORDINATOR_ROLE_STANDBY, leader_address=self.leader)

    def WatchJob(self, request, context):
        self.calls.append(("WatchJob", {}))
        step = self.script.pop(0) if self.script else []
        if step == "unavailable":
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        for state in step:
            yield pb.JobEvent(job=pb.Job(id=request.job_id, state=state, error_code="RESOURCE_EXHAUSTED"
                                         if state == pb.JOB_STATE_FAILED else "", error_message="pool full"
                                         if state == pb.JOB_STATE_FAILED else ""))
        # Then silence, until the client gives up (bounded).
        self.stop.wait(10)


def serve(servicer, key: str = CFG["server_key"], cert: str = CFG["server_cert"]) -> tuple:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    rpc.add_BackupServiceServicer_to_server(servicer, server)
    with open(key, "rb") as k, open(cert, "rb") as c:
        creds = grpc.ssl_server_credentials([(k.read(), c.read())])
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    return server, f"127.0.0.1:{port}"


def dead_address() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.standby = Standby(CFG["coordinator"])
        self.server, self.address = serve(self.standby)
        self.addCleanup(lambda: (self.standby.stop.set(), self.server.stop(0)))

    def client(self, addresses, **kw) -> Client:
        c = Client(ClientConfig(addresses=addresses, ca_file=CFG["ca"], cert_file=CFG["cert"], key_file=CFG["key"],
                                backoff_base=0.05, call_timeout=10, **kw))
        self.addCleanup(c.close)
        return c

    def test_a_standby_redirects_to_the_leader(self):
        c = self.client([self.address])
        missing = str(uuid.uuid4())
        with self.assertRaises(RbdbackupError) as e:
            c.get_backup(missing)
        # Answered by the real coordinator (the leader the standby named), not the standby.
        self.assertEqual(grpc.StatusCode.NOT_FOUND, e.exception.code)
        self.assertEqual(CFG["coordinator"], e.exception.address)
        self.assertEqual(["GetBackup"], [m for m, _ in self.standby.calls])
        # A mutating call with an idempotency key follows the leader too (the leader judges the request).
        with self.assertRaises(RbdbackupError) as e:
            c.create_backup(pb.CreateBackupRequest(idempotency_key="k-" + missing[:8]))
        self.assertEqual(grpc.StatusCode.INVALID_ARGUMENT, e.exception.code)
        self.assertEqual(CFG["coordinator"], e.exception.address)

    def test_the_relay_process_streams_to_the_leader_a_standby_names(self):
        # The Cinder driver's copies stream from a child process (rbdbackup_client/relay.py), which cannot
        # retry a stream it has read: it asks where the leader is first.
        cfg = ClientConfig(addresses=[self.address], ca_file=CFG["ca"], cert_file=CFG["cert"], key_file=CFG["key"])
        proc = relay.start("export", cfg, pb.ExportBackupRequest(backup_id=str(uuid.uuid4())), 30)
        try:
            proc.stdin.close()
            out = proc.stdout.read()
            relay.wait(proc)
            err = relay.errors(proc)
        finally:
            relay.end(proc)
        self.assertEqual(b"", out)
        with self.assertRaises(relay.RelayError) as e:
            relay.answer(err, proc)
        # Answered by the real coordinator (an unknown backup), not refused by the standby.
        self.assertEqual("NOT_FOUND", e.exception.code)
        self.assertEqual(["GetCoordinatorStatus"], [m for m, _ in self.standby.calls])

    def test_a_mutating_call_without_idempotency_key_is_not_retried(self):
        c = self.client([self.address])
        with self.assertRaises(RbdbackupError) as e:
            c.create_backup(pb.CreateBackupRequest())
        self.assertEqual(grpc.StatusCode.UNAVAILABLE, e.exception.code)
        self.assertEqual(self.address, e.exception.address)
        self.assertEqual(1, len(self.standby.calls))

    def test_unavailable_is_retried_over_the_addresses(self):
        c = self.client([dead_address(), CFG["coordinator"]])
        self.assertGreaterEqual(len(c.call("ListAgents", pb.ListAgentsRequest()).agents), 1)
        c2 = self.client([dead_address()], attempts=3)
        t = time.monotonic()
        with self.assertRaises(RbdbackupError) as e:
            c2.call("ListAgents", pb.ListAgentsRequest())
        self.assertEqual(grpc.StatusCode.UNAVAILABLE, e.exception.code)
        self.assertLess(time.monotonic() - t, 10)

    def test_token_is_sent_as_bearer(self):
        self.standby.leader = ""
        c = Client(ClientConfig(addresses=[self.address], ca_file=CFG["ca"], token="t0ken", attempts=1))
        self.addCleanup(c.close)
        self.assertRaises(RbdbackupError, c.get_backup, str(uuid.uuid4()))
        self.assertEqual("Bearer t0ken", self.standby.calls[0][1].get("authorization"))

    def test_only_a_coordinator_certificate_is_accepted(self):
        # An agent's certificate from the same CA names localhost and 127.0.0.1 too: a server holding one
        # is refused at the handshake, before the token or any request reaches it.
        impostor = Standby("")
        server, address = serve(impostor, CFG["agent_key"], CFG["agent_cert"])
        self.addCleanup(lambda: (impostor.stop.set(), server.stop(0)))
        c = Client(ClientConfig(addresses=[address], ca_file=CFG["ca"], token="t0ken", attempts=2,
                                backoff_base=0.05, call_timeout=5))
        self.addCleanup(c.close)
        with self.assertRaises(RbdbackupError) as e:
            c.get_backup(str(uuid.uuid4()))
        # Not UNAVAILABLE (an outage to wait out): a configuration to fix, and the error says what.
        self.assertEqual(grpc.StatusCode.UNAUTHENTICATED, e.exception.code, e.exception.details)
        self.assertIn("does not name coordinator.rbdbackup.invalid", e.exception.details)
        self.assertIn("gen-certs.sh", e.exception.details)
        self.assertEqual([], impostor.calls, "no call, so no token, reached the agent's server")
        # The same stand-in with the coordinator's certificate is reached (and sent the token).
        self.standby.leader = ""
        c2 = Client(ClientConfig(addresses=[self.address], ca_file=CFG["ca"], token="t0ken", attempts=1))
        self.addCleanup(c2.close)
        self.assertRaises(RbdbackupError, c2.get_backup, str(uuid.uuid4()))
        self.assertEqual(1, len(self.standby.calls))

    def test_wait(self):
        c = self.client([self.address])
        queued = pb.Job(id="j1", state=pb.JOB_STATE_QUEUED)
        # Re-opened after UNAVAILABLE, then the final event.
        self.standby.script = ["unavailable", [pb.JOB_STATE_RUNNING, pb.JOB_STATE_SUCCEEDED]]
        seen = []
        done = c.wait(queued, timeout=20, on_event=lambda j: seen.append(j.state))
        self.assertEqual(pb.JOB_STATE_SUCCEEDED, done.state)
        self.assertEqual([pb.JOB_STATE_RUNNING, pb.JOB_STATE_SUCCEEDED], seen)
        # A failed job: JobFailed with the job's own status.
        self.standby.script = [[pb.JOB_STATE_FAILED]]
        with self.assertRaises(JobFailed) as e:
            c.wait(queued, timeout=20)
        self.assertEqual(grpc.StatusCode.RESOURCE_EXHAUSTED, e.exception.code)
        self.assertIn("pool full", str(e.exception))
        # A job that never ends: DEADLINE_EXCEEDED naming the last state, within the deadline.
        self.standby.script = [[pb.JOB_STATE_RUNNING]]
        t = time.monotonic()
        with self.assertRaises(RbdbackupError) as e:
            c.wait(queued, timeout=1.5)
        self.assertEqual(grpc.StatusCode.DEADLINE_EXCEEDED, e.exception.code)
        self.assertIn("JOB_STATE_RUNNING", str(e.exception))
        self.assertLess(time.monotonic() - t, 5)

    def test_config_is_validated(self):
        for bad in (
            ClientConfig(addresses=[]),
            ClientConfig(addresses=["nohost"], insecure=True),
            ClientConfig(addresses=["127.0.0.1:1"]),
            ClientConfig(addresses=["127.0.0.1:1"], ca_file=CFG["ca"]),
            ClientConfig(addresses=["127.0.0.1:1"], ca_file=CFG["ca"], cert_file=CFG["cert"]),
        ):
            self.assertRaises(ValueError, Client, bad)
        self.assertRaisesRegex(ValueError, "cannot read the TLS CA", Client,
                               ClientConfig(addresses=["127.0.0.1:1"], ca_file="/nonexistent", token="t"))


class Hung(rpc.BackupServiceServicer):
    """Accepts every call and never answers (a coordinator whose catalog hangs): each call ends at its
    deadline (bounded here too)."""

    def __init__(self):
        self.stop = threading.Event()

    def GetJob(self, request, context):
        self.stop.wait(20)
        context.abort(grpc.StatusCode.INTERNAL, "the test ended")

    def WatchJob(self, request, context):
        self.stop.wait(20)
        return
        yield  # a generator: a stream that never sends


class HungTest(unittest.TestCase):
    def test_a_coordinator_that_never_answers_is_unreachable_after_unreachable_timeout(self):
        """Calls that end DEADLINE_EXCEEDED without a word count as unreachable, as UNAVAILABLE does: the
        wait ends after unreachable_timeout, not after the job's own timeout (a day in Cinder)."""
        hung = Hung()
        server, address = serve(hung)
        self.addCleanup(lambda: (hung.stop.set(), server.stop(0)))
        c = Client(ClientConfig(addresses=[address], ca_file=CFG["ca"], cert_file=CFG["cert"], key_file=CFG["key"],
                                backoff_base=0.05, call_timeout=1, unreachable_timeout=2))
        self.addCleanup(c.close)
        t = time.monotonic()
        with self.assertRaises(RbdbackupError) as e:
            c.wait(pb.Job(id="j1", state=pb.JOB_STATE_RUNNING), timeout=60, should_stop=lambda: False,
                   check_interval=1)
        self.assertEqual(grpc.StatusCode.UNAVAILABLE, e.exception.code)
        self.assertIn("no coordinator answered for", str(e.exception))
        self.assertLess(time.monotonic() - t, 30, "ended by unreachable_timeout, not the job's 60 s")

    def test_the_same_under_eventlet_polling(self):
        import os
        import subprocess
        import sys

        hung = Hung()
        server, address = serve(hung)
        self.addCleanup(lambda: (hung.stop.set(), server.stop(0)))
        try:
            out = subprocess.run([sys.executable, "-c", HUNG_EVENTLET_SCRIPT, address], capture_output=True,
                                 text=True, timeout=90, env=dict(os.environ))
        except subprocess.TimeoutExpired:
            self.fail("the wait under eventlet did not end within 90 s")
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertIn("UNAVAILABLE: no coordinator answered for", out.stdout, out.stdout + out.stderr)


# wait() under eventlet's monkey-patching (GetJob polls) against a coordinator that never answers.
HUNG_EVENTLET_SCRIPT = r"""
import eventlet
eventlet.monkey_patch()
import sys, time
from lab import test_config
from rbdbackup_client import Client, ClientConfig, RbdbackupError, backup_service_pb2 as pb
cfg = test_config()
c = Client(ClientConfig(addresses=[sys.argv[1]], ca_file=cfg["ca"], cert_file=cfg["cert"], key_file=cfg["key"],
                        backoff_base=0.05, call_timeout=1, unreachable_timeout=2))
t = time.monotonic()
try:
    c.wait(pb.Job(id="j1", state=pb.JOB_STATE_RUNNING), timeout=60, should_stop=lambda: False, check_interval=1)
    print("no error", flush=True)
except RbdbackupError as e:
    print("%s %s after %.1f s" % (e.code.name, str(e), time.monotonic() - t), flush=True)
c.close()
"""


class Busy(rpc.BackupServiceServicer):
    """Answers GetBackup at once; GetJob says RUNNING until the job is a second old, then SUCCEEDED."""

    def __init__(self):
        self.first_seen: dict = {}

    def GetBackup(self, request, context):
        return pb.Backup(id=request.backup_id, status=pb.BACKUP_STATUS_AVAILABLE)

    def GetJob(self, request, context):
        t = self.first_seen.setdefault(request.job_id, time.monotonic())
        done = time.monotonic() - t >= 1.0
        return pb.Job(id=request.job_id, state=pb.JOB_STATE_SUCCEEDED if done else pb.JOB_STATE_RUNNING)


# Run with eventlet's monkey-patching (as cinder-backup runs): 6 green threads, each GetBackup x 20 then
# wait() on its own job, at once. Prints "finished N failed M" (a deadlock prints nothing: killed).
EVENTLET_SCRIPT = r"""
import eventlet
eventlet.monkey_patch()
import sys
from lab import test_config
from rbdbackup_client import Client, ClientConfig, backup_service_pb2 as pb
cfg = test_config()
c = Client(ClientConfig(addresses=[sys.argv[1]], ca_file=cfg["ca"], cert_file=cfg["cert"], key_file=cfg["key"],
                        backoff_base=0.05, call_timeout=10))
done, failed = [], []
def op(i):
    try:
        for _ in range(20):
            c.get_backup("11111111-1111-4111-8111-%012d" % i)
        j = c.wait(pb.Job(id="job-%d" % i, state=pb.JOB_STATE_QUEUED), timeout=30)
        assert j.state == pb.JOB_STATE_SUCCEEDED
        done.append(i)
    except Exception as e:
        failed.append(repr(e))
pool = eventlet.GreenPool()
for i in range(6):
    pool.spawn(op, i)
pool.waitall()
print("finished %d failed %d %s" % (len(done), len(failed), failed[:1]), flush=True)
c.close()
"""


class EventletTest(unittest.TestCase):
    def test_concurrent_calls_under_eventlet_all_finish(self):
        """Two or more operations at once in an eventlet-patched process (cinder-backup) used to deadlock
        for good: grpcio's green locks shared by two native threads."""
        import os
        import subprocess
        import sys

        server, address = serve(Busy())
        self.addCleanup(lambda: server.stop(0))
        try:
            out = subprocess.run([sys.executable, "-c", EVENTLET_SCRIPT, address], capture_output=True, text=True,
                                 timeout=60, env=dict(os.environ))
        except subprocess.TimeoutExpired:
            self.fail("6 operations at once under eventlet did not finish within 60 s (deadlocked)")
        self.assertEqual(0, out.returncode, out.stderr)
        self.assertIn("finished 6 failed 0", out.stdout, out.stdout + out.stderr)
