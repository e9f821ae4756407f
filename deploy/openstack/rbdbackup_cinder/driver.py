"""Cinder backup driver that hands volume backups to rbdbackup.

Cinder's backup manager calls this driver as it calls CephBackupDriver; an RBD volume's data never
passes through cinder-backup (only a copy's does, below): the driver asks the coordinator (CreateBackup,
RestoreBackup, DeleteBackup), follows the job (GetJob polls: cinder-backup runs under eventlet) and maps the outcome onto Cinder's exceptions. The rules mirror
cinder/backup/drivers/ceph.py (Cinder 21):
- the source is `volume.name` of backup.volume_id in the pool of the RBD volume file, so a forced
  backup of an in-use volume snapshots the volume itself, as Ceph's driver does;
- backup.parent_id set = incremental from that parent's snapshot; its snapshot gone (or the parent
  not ours) = BackupRBDOperationFailed "Can't find snapshot from parent …", as Ceph's driver — except
  a parent another driver made (the first incremental after switching from Ceph's driver): a full
  backup then, its parent_id cleared;
- a backup's container is the pool rbdbackup writes it to: only rbdbackup_backup_pool and
  rbdbackup_allowed_containers are taken (any Cinder user may name a container);
- a non-RBD volume file with a parent is BackupRBDOperationFailed too (a snapshot backup's parent is
  dropped instead: it is a full copy);
- a volume file that is not RBD, or a Cinder snapshot (backup.snapshot_id), is copied in full, as Ceph's
  driver copies them: its non-zero 4 MiB chunks streamed as an rbd diff (ImportBackup, in a child
  process: rbdbackup_client/relay.py), listed under VolumeLocator.copied_volume_ref; a restore onto a
  target that is not RBD is the reverse (ExportBackup), every byte of the target written;
- the volume's Cinder metadata (BackupMetadataAPI.get) is saved with the backup, written once, and put
  back on restore (BackupMetadataAPI.put; an unknown version is "Metadata restore failed due to
  incompatible version"; a lost metadata object is made up for by the catalog's copy);
- restore onto an RBD volume always goes over the target (mode ORIGINAL: every byte rewritten), then
  the target is grown back to its own size when it is larger than the backup (the excess reads as
  zeros); a copy restore zeroes the tail itself;
- delete of a backup whose data is gone is a warning, not a failure.
rbdbackup's own backup id is kept in backup.service_metadata ({"rbdbackup_id", "base"}); the Cinder
backup id is the idempotency key of CreateBackup, so a repeated call never makes a second backup.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import threading
import time
import uuid
from typing import Dict, List, Optional, Tuple

from oslo_log import log as logging

from cinder import exception, interface, objects
from cinder.backup import driver
from cinder.i18n import _
from cinder.objects import fields
from rbdbackup_client import (
    FINAL_STATES,
    Client,
    JobFailed,
    RbdbackupError,
    Stopped,
    agent_pb2,
    backup_service_pb2 as pb,
    common_pb2,
)

from rbdbackup_client import relay

from . import copy, metadata, options
from .volumes import SNAPSHOT_PATTERN, VolumeLocator, file_is_rbd

LOG = logging.getLogger(__name__)
# How long a cancelled job is waited for before the driver reports the operation over, seconds.
CANCEL_WAIT_S = 120.0
# The sweep of this host's leftover restores runs this long after the driver's setup check (after Cinder's
# own cleanup of the restores it gave up on) and again as long after a sweep that could not list the jobs;
# after one that did, every LEFTOVER_SWEEP_INTERVAL_S for as long as the process runs (a Cinder cleanup
# slower than the first delay, a reset-state while nobody followed the restore, a cancel that failed).
LEFTOVER_SWEEP_DELAY_S = 60.0
LEFTOVER_SWEEP_INTERVAL_S = 600.0
# A Cinder volume a restore is writing: 'restoring-backup' (RestoreBackup), 'creating' (made from a backup).
RESTORING_VOLUME_STATUSES = ("restoring-backup", "creating")
# This process's sweep (one, however often the setup check runs) and the restore jobs it follows now.
_sweep = {"started": False}
_following: set = set()
CONF = options.CONF
GiB = 1 << 30

# One client per process and configuration. Cinder's backup manager makes a driver object for every
# operation and never closes it: each would open its own channels and TLS connections, left open until
# garbage collection. Client.close() only drops the channels (the next call reopens them), so a caller
# that closes the shared client breaks nothing.
# A client reads its TLS files once: when one of them changes on disk (a renewed certificate), the
# next driver gets a new client that reads them again.
_clients: Dict[str, Tuple[Client, tuple]] = {}
_clients_lock = threading.Lock()


def _files_stamp(config) -> tuple:
    """When the client's TLS files last changed (0: not configured, -1: unreadable)."""
    out = []
    for path in (config.ca_file, config.cert_file, config.key_file):
        try:
            out.append(os.stat(path).st_mtime_ns if path else 0)
        except OSError:
            out.append(-1)
    return tuple(out)


def _shared_client(config) -> Client:
    key = repr(config)  # a dataclass: every field
    stamp = _files_stamp(config)
    with _clients_lock:
        entry = _clients.get(key)
        if entry is None or entry[1] != stamp:
            # The replaced client is not closed: a backup's or restore's watch still running on it would
            # end CANCELLED ("Channel closed!"). Its channels go once no driver holds it.
            entry = _clients[key] = (Client(config), stamp)
        return entry[0]


# A coordinator or agent not up yet: check_for_setup_error warns instead of failing the service.
TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED")


# A backup's status that left 'restoring' this soon after another restore of it ended was that restore's
# end (Cinder's manager sets it available once its driver returns), not an admin's reset-state.
SIBLING_END_WINDOW = datetime.timedelta(seconds=60)
CLOCK_SKEW = datetime.timedelta(seconds=5)


def _later(delay: float, fn) -> None:
    """Calls fn after `delay` seconds, on eventlet's hub when the process is patched (cinder-backup is),
    else on a daemon timer thread."""
    try:
        from eventlet import greenthread, patcher

        if patcher.is_monkey_patched("thread"):
            greenthread.spawn_after(delay, fn)
            return
    except ImportError:
        pass
    t = threading.Timer(delay, fn)
    t.daemon = True
    t.start()


def _native(image):
    """The open rbd.Image, its blocking calls run in eventlet's native thread pool when the process is
    patched (as Cinder's Ceph driver does: tpool.Proxy of volume_file.rbd_image): `volume_file`'s own proxy
    hands attributes such as rbd_image out unwrapped, and a resize waiting for the exclusive lock would
    stall every green thread of cinder-backup."""
    try:
        from eventlet import patcher, tpool

        if patcher.is_monkey_patched("thread"):
            return tpool.Proxy(image)
    except ImportError:
        pass
    return image


class CopyStopped(Exception):
    """A copy stopped by its status check (error: the check's own failure, else None)."""

    def __init__(self, why):
        self.error = None if why is True else why
        super().__init__(str(why))


def _off_hub(fn):
    """fn() in eventlet's native thread pool when eventlet patched this process (cinder-backup), so that a
    copy's reads, writes and waits on its relay process block no green thread; else here. fn does no gRPC
    (the relay process does), so it needs no turn of the client's."""
    try:
        from eventlet import patcher, tpool
    except ImportError:
        return fn()
    return tpool.execute(fn) if patcher.is_monkey_patched("thread") else fn()


def _naive_utc(t):
    """A Cinder timestamp as a naive UTC datetime (as protobuf's ToDatetime gives), or None."""
    if t is None:
        return None
    return t.astimezone(datetime.timezone.utc).replace(tzinfo=None) if t.tzinfo else t


def _host_tag(host: str) -> str:
    """Cinder's `host` as it can stand in an idempotency key (≤ 128 characters of [A-Za-z0-9._:-] in
    all): as it is when it fits, else "h-" and 16 hex of its sha256 (a host such as "node@ceph" or a long
    FQDN made every restore fail INVALID_ARGUMENT)."""
    if re.fullmatch(r"[A-Za-z0-9._:-]{1,63}", host):
        return host
    return "h-" + hashlib.sha256(host.encode()).hexdigest()[:16]


def _restore_key_prefix() -> str:
    """The idempotency key prefix of this host's restores (Cinder's `host` option)."""
    return f"cinder-restore-{_host_tag(CONF.host)}-"


def _restore_key(backup_id: str) -> str:
    """A restore's idempotency key: "cinder-restore-<host>-<backup uuid>-<12 hex>", one per call."""
    return f"{_restore_key_prefix()}{backup_id}-{uuid.uuid4().hex[:12]}"


def _is_my_restore_key(key: str) -> bool:
    """Whether `key` is a _restore_key of this host, exactly (a host named "backup" must not match the keys
    of "backup-2")."""
    rest = r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}-[0-9a-f]{12}$"
    return re.match(re.escape(_restore_key_prefix()) + rest, key) is not None


def _watching_clients(volume_file, volume_id: str) -> list:
    """The addresses of the clients watching the volume: cinder-backup's own open handle is one of them
    (each operation connects a client of its own). A listing that fails (or an image handle without one)
    is BackupOperationError: the restore switches the agent's own in-use check off for cinder-backup's
    handle (allow_open), so this list is the only check left — without it a VM still writing to the
    volume would be restored over."""
    image = getattr(volume_file, "rbd_image", None)  # os-brick's wrapper: the open rbd.Image
    why = "cinder-backup has no open image of it"
    if image is not None:
        try:
            return sorted({str(w.get("addr", "?")) for w in _native(image).watchers_list()})
        except Exception as e:  # noqa: BLE001 - an older librbd, or the listing failed: refused below, with why
            why = f"{type(e).__name__}: {e}"
    msg = _("could not list the clients that have volume %(v)s open (%(why)s): it is not restored over "
            "without knowing that no other client uses it; try again, or check cinder-backup's access to "
            "its pool") % {"v": volume_id, "why": why}
    LOG.error(msg)
    raise exception.BackupOperationError(msg)


def _service_metadata(backup) -> dict:
    try:
        meta = json.loads(backup.service_metadata or "{}")
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def rbdbackup_id(backup) -> Optional[str]:
    """rbdbackup's id of a Cinder backup (None when it was never made, or not by this driver)."""
    return _service_metadata(backup).get("rbdbackup_id")


def _record_differs(want, have) -> str:
    """What an exported record's backup and the catalog's backup of the same id disagree on ("" = nothing
    that matters: the volume, where the backup is kept, its base image and snapshot)."""
    def vol(v):
        return (v.cluster, v.pool, v.namespace, v.image)

    def loc(l):
        return (l.cluster, l.pool, l.namespace)

    diffs = []
    if vol(want.volume) != vol(have.volume):
        diffs.append("volume %s, here %s" % ("/".join(vol(want.volume)), "/".join(vol(have.volume))))
    if loc(want.location) != loc(have.location):
        diffs.append("location %s, here %s" % ("/".join(loc(want.location)), "/".join(loc(have.location))))
    for field in ("base_image", "snapshot"):
        if getattr(want, field) != getattr(have, field):
            diffs.append("%s %s, here %s" % (field, getattr(want, field), getattr(have, field)))
    return "; ".join(diffs)


@interface.backupdriver
class RbdbackupBackupDriver(driver.BackupDriver):
    """Backs up RBD volumes through an rbdbackup coordinator."""

    def __init__(self, context, client: Optional[Client] = None):
        super().__init__(context)
        self._client = client
        self.locator = VolumeLocator(CONF)
        # `backup delete --force` of a backup being made: the manager's delete_backup cancels its job (a
        # cancelled backup leaves nothing), and backup() returns without a result (Cinder: "aborted").
        self.support_force_delete = True

    @staticmethod
    def get_driver_options() -> list:
        return options.rbdbackup_opts

    @staticmethod
    def backup_snapshot_name_pattern() -> str:
        """Backup snapshots are named as Ceph's driver names them (design.md, storage layout)."""
        return SNAPSHOT_PATTERN

    @property
    def client(self) -> Client:
        if self._client is None:
            try:
                self._client = _shared_client(options.client_config(CONF))
            except ValueError as e:
                raise exception.BackupDriverException(reason=str(e)) from None
        return self._client

    # --- setup ----------------------------------------------------------------------------------

    def check_for_setup_error(self) -> None:
        for opt in ("rbdbackup_coordinators", "rbdbackup_backup_cluster"):
            if not getattr(CONF, opt):
                raise exception.InvalidConfigurationValue(option=opt, value=getattr(CONF, opt))
        try:
            r = self.client.check_cluster(CONF.rbdbackup_backup_cluster, CONF.rbdbackup_backup_pool or "")
        except RbdbackupError as e:
            if e.code.name in TRANSIENT:
                # Cinder runs this check once (its looping call stops at the first exception, leaving the
                # service down until restarted): a coordinator or agent still starting is only a warning,
                # and each backup call then says what is wrong.
                LOG.warning("rbdbackup is not reachable yet (%(err)s): backups fail until it is.", {"err": e})
                self._sweep_leftover_restores_later()
                return
            raise exception.BackupDriverException(reason=str(e)) from None
        self._sweep_leftover_restores_later()
        if not r.ok:
            failed = "; ".join(f"{c.name}: {c.message}" for c in r.checks if not c.ok)
            raise exception.BackupDriverException(
                reason=_("rbdbackup cluster %(c)s is not ready: %(f)s") % {"c": CONF.rbdbackup_backup_cluster, "f": failed}
            )
        self._check_volume_clusters()

    def _check_volume_clusters(self) -> List[str]:
        """The clusters rbdbackup_cluster_map and rbdbackup_default_volume_cluster name should be clusters
        the coordinator knows: a typo there makes every backup of that backend fail NOT_FOUND, long after
        start. A malformed name is a setup error; an unknown one is logged as an error, not raised — its
        agents may simply not have registered yet, and a failed setup check would stop every backend's
        backups. One attempt per cluster (the start is not held up by retries). Returns what was logged."""
        named = [(f"rbdbackup_cluster_map[{k}]", v) for k, v in sorted((CONF.rbdbackup_cluster_map or {}).items())]
        if CONF.rbdbackup_default_volume_cluster:
            named.append(("rbdbackup_default_volume_cluster", CONF.rbdbackup_default_volume_cluster))
        logged: List[str] = []
        for opt, cluster in named:
            if cluster == CONF.rbdbackup_backup_cluster:
                continue
            try:
                self.client.call("CheckCluster", pb.CheckClusterRequest(cluster=cluster), retry=False)
            except RbdbackupError as e:
                if e.code.name == "INVALID_ARGUMENT":
                    raise exception.InvalidConfigurationValue(option=opt, value=cluster) from None
                msg = (f"{opt} = {cluster}: the rbdbackup coordinator does not know this cluster (no agent of "
                       f"it has registered): backups of its volumes fail until one does — check the name"
                       if e.code.name == "NOT_FOUND" else
                       f"{opt} = {cluster}: could not be checked ({e}): backups of its volumes fail until it can")
                if e.code.name == "NOT_FOUND":
                    LOG.error(msg)
                else:
                    LOG.warning(msg)
                logged.append(msg)
        return logged

    def _sweep_leftover_restores_later(self) -> None:
        """Starts this process's sweep of its host's leftover restores (once): _cancel_leftover_restores
        LEFTOVER_SWEEP_DELAY_S from now — after Cinder's own cleanup, which follows this check in the
        manager's start and marks the volumes of the restores it gave up on error_restoring — then every
        LEFTOVER_SWEEP_INTERVAL_S, or LEFTOVER_SWEEP_DELAY_S after a sweep that could not list the jobs."""
        if _sweep["started"]:
            return
        _sweep["started"] = True

        def sweep() -> None:
            try:
                # A driver of its own each time: the shared client as it is now (made again after a
                # renewed certificate), as every operation's driver gets it.
                done = type(self)(self.context)._cancel_leftover_restores()
            except Exception as e:  # noqa: BLE001 - a sweep must not kill the service; logged
                LOG.warning("Could not sweep this host's leftover rbdbackup restores: %(err)s", {"err": e})
                done = False
            _later(LEFTOVER_SWEEP_INTERVAL_S if done else LEFTOVER_SWEEP_DELAY_S, sweep)

        _later(LEFTOVER_SWEEP_DELAY_S, sweep)

    @staticmethod
    def _restoring(job: pb.Job, volumes: dict) -> bool:
        """Whether `job`'s volume is one Cinder may still have a restore writing: 'restoring-backup', or
        'creating' (a volume made from a backup: Cinder's own cleanup leaves such a volume as it is, and
        its backup's status cannot tell — it goes back to available when any restore of it ends, while
        others still run in other backup workers)."""
        return volumes.get(job.volume.image) in RESTORING_VOLUME_STATUSES

    def _cancel_leftover_restores(self) -> bool:
        """Cancels the restores this host started, not followed by this process, whose volume Cinder no
        longer has restoring (_restoring): left running by this host before it restarted (Cinder's cleanup
        marked their volumes error_restoring and does not wait for them) or given up by an admin
        (reset-state) while nobody followed them — they must not write on. The restores of this host's
        other backup workers (backup_workers > 1 share the host) have their volumes restoring and are left
        alone. False when the jobs could not be listed."""
        try:
            jobs = [
                j
                for state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING)
                for j in self.client.list_jobs(kind=pb.JOB_KIND_RESTORE, state=state)
            ]
        except RbdbackupError as e:
            LOG.warning("Could not list rbdbackup restore jobs to cancel this host's leftovers: %(err)s", {"err": e})
            return False
        mine = [
            j
            for j in jobs
            if j.state not in FINAL_STATES and _is_my_restore_key(j.idempotency_key) and j.id not in _following
        ]
        if not mine:
            return True
        found = self.db.volume_get_all(self.context, filters={"status": list(RESTORING_VOLUME_STATUSES)})
        volumes = {v["name"]: v["status"] for v in found}
        for job in mine:
            if self._restoring(job, volumes):
                continue
            try:
                self.client.cancel_job(job.id)
                LOG.warning("Cancelled rbdbackup restore job %(job)s of this host: Cinder no longer has its volume "
                            "%(v)s restoring.", {"job": job.id, "v": job.volume.image})
            except RbdbackupError as e:
                if e.code.name != "FAILED_PRECONDITION":  # it ended meanwhile; else the next sweep tries again
                    LOG.warning("Could not cancel rbdbackup job %(job)s: %(err)s", {"job": job.id, "err": e})
        return True

    # --- backup ---------------------------------------------------------------------------------

    def _parent_snapshot(self, backup) -> pb.Backup:
        """The parent's rbdbackup backup, available; else Ceph's error for a missing parent snapshot."""
        parent = objects.Backup.get_by_id(self.context, backup.parent_id)
        pid = rbdbackup_id(parent)
        found: Optional[pb.Backup] = None
        if pid:
            try:
                found = self.client.get_backup(pid)
            except RbdbackupError as e:
                if e.code.name != "NOT_FOUND":
                    raise exception.BackupDriverException(reason=str(e)) from None
        container = backup.container or CONF.rbdbackup_backup_pool
        # An empty container is the backup cluster's default pool, whose name the driver does not know.
        elsewhere = found is not None and (
            found.location.cluster != self.locator.backup_cluster()
            or (bool(container) and found.location.pool != container)
        )
        if found is None or found.status != pb.BACKUP_STATUS_AVAILABLE or elsewhere:
            # Ceph's driver looks for the parent's base image in this backup's pool: a parent kept in
            # another container cannot be extended either (rbdbackup would chain from another backup).
            msg = _("Can't find snapshot from parent %(incr)s and base name image %(base)s.") % {
                "incr": backup.parent_id,
                "base": _service_metadata(parent).get("base", "-"),
            }
            LOG.error(msg)
            raise exception.BackupRBDOperationFailed(msg)
        return found

    def _follow(self, job: pb.Job, what: str, cancel: bool, stop_when=None) -> pb.Job:
        """Waits for a job (rbdbackup_job_timeout). When asked, a job this call stops following for any
        reason (its deadline, a lost or refused watch, `stop_when` — read every
        rbdbackup_status_check_interval — turning true) is cancelled: Cinder gives up on the operation,
        so a restore must not write on over a volume it marks failed. `stop_when` turning true raises
        Stopped."""
        try:
            return self.client.wait(
                job,
                timeout=float(CONF.rbdbackup_job_timeout),
                should_stop=stop_when,
                check_interval=float(CONF.rbdbackup_status_check_interval),
            )
        except JobFailed:
            raise
        except Exception as e:
            # Whatever ended the wait — a lost watch, its deadline, `stop_when`, or `stop_when` itself failing
            # (Cinder's database away) — the job is not left running on its own.
            if cancel:
                ended = self._cancel_and_wait(job)
                # A cancel that came too late (the work was done: CancelJob leaves the job SUCCEEDED, or
                # refuses a job that had ended) or failed, with the job then succeeding, is the operation
                # done — unless Cinder itself asked to stop (`stop_when`).
                if ended is not None and ended.state == pb.JOB_STATE_SUCCEEDED and not isinstance(e, Stopped):
                    LOG.warning("rbdbackup job %(job)s succeeded after all (its cancel came too late or "
                                "failed): %(err)s", {"job": job.id, "err": e})
                    return ended
            if isinstance(e, RbdbackupError):
                raise exception.BackupOperationError(_("%(what)s: %(err)s") % {"what": what, "err": e}) from None
            raise

    def _cancel_and_wait(self, job: pb.Job) -> Optional[pb.Job]:
        """Cancels a job and waits (bounded: CANCEL_WAIT_S, above CancelJob's documented worst case of
        ~85 s) until it ended, so that Cinder, told the operation is over, does not detach a volume the job
        still writes to: the ended job, or None when it was not seen to end. A job that had ended already
        (CancelJob refuses it FAILED_PRECONDITION — it may have SUCCEEDED while its watch was lost) is
        read as it ended; a cancel that failed otherwise is still followed by the wait (the job may end on
        its own). Failures are logged: the caller's error stands."""
        cancelled = True
        try:
            self.client.cancel_job(job.id)
        except Exception as ce:  # noqa: BLE001 - logged; the wait below still tells how the job ended
            cancelled = False
            if isinstance(ce, RbdbackupError) and ce.code.name == "FAILED_PRECONDITION":
                LOG.debug("rbdbackup job %(job)s had ended before its cancel: %(err)s", {"job": job.id, "err": ce})
            else:
                LOG.warning("Could not cancel rbdbackup job %(job)s (%(err)s): waiting up to %(s)d s for it to end "
                            "on its own.", {"job": job.id, "err": ce, "s": CANCEL_WAIT_S})
        try:
            # `job` is the state last seen, maybe not final any more: wait() reads the job again.
            ended = self.client.wait(job, timeout=CANCEL_WAIT_S, raise_on_failure=False)
        except Exception as we:  # noqa: BLE001 - logged; the operation's own error is the one raised
            LOG.warning("rbdbackup job %(job)s was not seen to end (%(err)s): it may still be running.",
                        {"job": job.id, "err": we})
            return None
        LOG.info("rbdbackup job %(job)s ended %(s)s%(after)s.", {
            "job": job.id, "s": pb.JobState.Name(ended.state),
            "after": " after its cancel" if cancelled else " (not cancelled)",
        })
        return ended

    @staticmethod
    def _status_now(backup) -> str:
        """The Cinder backup's status in the database now (a deleted row included)."""
        with backup.as_read_deleted():
            backup.refresh()
        return backup.status

    @staticmethod
    def _check_container(backup) -> None:
        """A backup's container is the pool of the backup cluster rbdbackup writes it to, and any Cinder
        user may name one (`--container`): only rbdbackup_backup_pool and rbdbackup_allowed_containers
        are taken, so that a tenant cannot make the agent write into another pool of that cluster."""
        allowed = {CONF.rbdbackup_backup_pool or ""} | set(CONF.rbdbackup_allowed_containers or [])
        if (backup.container or "") in allowed:
            return
        msg = _("container %(c)r is not a pool this cloud keeps backups in (%(ok)s): create the backup without "
                "--container, or ask the operator to add it to rbdbackup_allowed_containers") % {
            "c": backup.container, "ok": ", ".join(sorted(a for a in allowed if a)) or "the default pool"}
        LOG.error("Backup %(id)s refused: %(msg)s", {"id": backup.id, "msg": msg})
        raise exception.InvalidBackup(reason=msg)

    def _parent_not_ours_to_extend(self, backup) -> bool:
        """Whether the backup's parent cannot start an incremental: made by another backup driver
        (Cinder's Ceph driver, before a switch), or a copy of ours (of a Cinder snapshot). Cinder's API
        takes the volume's newest backup as an incremental's parent whatever made it. Another driver's
        names no rbdbackup backup and another driver than this backup's (the manager records its driver
        in `service` before it calls the driver); a copy says so in its service_metadata."""
        parent = objects.Backup.get_by_id(self.context, backup.parent_id)
        if _service_metadata(parent).get("copy"):
            return True
        return not rbdbackup_id(parent) and bool(parent.service and backup.service) and parent.service != backup.service

    def _copy_checked(self, kind: str, request, body, stop_when):
        """The relay process for `kind` started with `request` (bounded by rbdbackup_job_timeout), and
        body(proc, stopped) run with it in a native thread (_off_hub), the process ended after; all the
        while `stop_when` is read every rbdbackup_status_check_interval, as _follow reads it: turning
        true — or failing, Cinder's database away — kills the relay process, which ends its call, so
        rbdbackup cancels the job (ImportBackup and ExportBackup cancel theirs when their caller goes),
        and `stopped()` ends the copy's own loop at its next chunk (copy.py). Raises CopyStopped then (with the check's own error, if it failed; a copy that
        completed before a failed check is kept). `stop_when(started)` gets the list holding the relay
        process once it started (empty before)."""
        started: list = []
        state: dict = {"done": False, "stopped": None}

        def stopped() -> bool:
            return state["stopped"] is not None

        def run():
            proc = relay.start(kind, self.client.config, request, float(CONF.rbdbackup_job_timeout))
            started.append(proc)
            try:
                if stopped():
                    proc.kill()  # stopped before the process was known to the check
                return body(proc, stopped)
            finally:
                relay.end(proc)

        interval = float(CONF.rbdbackup_status_check_interval)

        def check() -> None:
            while not state["done"]:
                time.sleep(interval)
                if state["done"]:
                    return
                try:
                    stop = stop_when(started)
                except Exception as e:  # noqa: BLE001 - the copy is not left running unchecked
                    state["stopped"] = e
                    stop = True
                if stop:
                    state["stopped"] = state["stopped"] or True
                    for proc in started:
                        proc.kill()
                    return

        checker = threading.Thread(target=check, daemon=True)
        checker.start()
        try:
            result = _off_hub(run)
        except Exception:
            if state["stopped"] is not None:
                raise CopyStopped(state["stopped"]) from None
            raise
        finally:
            state["done"] = True
        # A copy that completed stays done unless Cinder asked to stop it (a check that failed — its
        # database away — does not undo it).
        if state["stopped"] is True:
            raise CopyStopped(True)
        return result

    def _copy_backup(self, backup, volume, volume_file, volume_metadata) -> dict:
        """A full copy of the volume file — a volume that is not RBD, or the Cinder snapshot the manager
        attached — streamed to rbdbackup (ImportBackup) as Ceph's driver copies such volumes, but
        leaving out all-zero chunks. Listed under copied_volume_ref, not under the RBD volume's name."""
        if backup.parent_id:
            # Ceph's driver makes every snapshot backup a full copy: recorded so (see backup()).
            LOG.warning("Backup %(id)s of snapshot %(s)s is a full copy, not an incremental of %(p)s.",
                        {"id": backup.id, "s": backup.snapshot_id, "p": backup.parent_id})
            backup.parent_id = None
            backup.save()
        length = int(volume["size"]) * GiB
        header = pb.ImportBackupHeader(
            volume=self.locator.copied_volume_ref(volume, backup.snapshot_id),
            location=common_pb2.BackupLocation(cluster=self.locator.backup_cluster(), pool=backup.container),
            volume_id=volume.id,
            volume_metadata=volume_metadata,
            idempotency_key=backup.id,
            format=pb.DIFF_FORMAT_RBD_V1,
        )
        if backup.snapshot_id and backup.data_timestamp:
            # The data is the snapshot's (Cinder's data_timestamp: its created_at), not the copy's time.
            # Another host's clock: never later than this one's (rbdbackup refuses a time in its future).
            header.taken_at.FromDatetime(min(_naive_utc(backup.data_timestamp), datetime.datetime.utcnow()))
        what = _("snapshot %s") % backup.snapshot_id if backup.snapshot_id else _("volume %s") % volume.id
        LOG.debug("Copying %(what)s (%(n)d bytes) to rbdbackup.", {"what": what, "n": length})

        def body(proc, stopped):
            try:
                sent = copy.send(volume_file, length, proc.stdin, stop=stopped)
            except BrokenPipeError:
                sent = -1  # the call ended early (a refusal): its answer says why
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            out = proc.stdout.read()
            relay.wait(proc)
            return sent, relay.answer(out, proc)

        try:
            sent, got = self._copy_checked(
                "import",
                header,
                body,
                lambda started: self._status_now(backup) in (fields.BackupStatus.DELETING, fields.BackupStatus.DELETED),
            )
        except CopyStopped as e:
            # As a followed backup being force-deleted (backup()): nothing to return; the manager's
            # delete_backup finds whatever the cancelled import left by its Cinder id.
            now = self._status_now(backup)
            if e.error is None and now in (fields.BackupStatus.DELETING, fields.BackupStatus.DELETED):
                LOG.info("Backup %(id)s is being deleted: its copy was stopped.", {"id": backup.id})
                return {}
            raise exception.BackupOperationError(
                _("rbdbackup copy of %(what)s stopped (backup now %(s)s): %(err)s")
                % {"what": what, "s": now, "err": e.error or "deleted while it was made"}
            ) from None
        except relay.RelayError as e:
            LOG.error("rbdbackup copy of %(what)s failed: %(err)s", {"what": what, "err": e})
            raise exception.BackupOperationError(_("rbdbackup copy of %(what)s: %(err)s") % {"what": what, "err": e}) from None
        b = relay.job_of(got).backup
        LOG.info("Backup %(id)s of %(what)s is rbdbackup backup %(rid)s (a full copy, %(n)d bytes of data).",
                 {"id": backup.id, "what": what, "rid": b.id, "n": sent})
        return {"service_metadata": json.dumps({"rbdbackup_id": b.id, "base": b.base_image, "copy": True})}

    def backup(self, backup, volume_file, backup_metadata: bool = True) -> dict:
        volume = self.db.volume_get(self.context, backup.volume_id)
        if not backup.container:
            backup.container = CONF.rbdbackup_backup_pool
            backup.save()
        self._check_container(backup)
        if int(volume["size"]) == 0:
            raise exception.InvalidParameterValue(_("Need non-zero volume size"))
        if not file_is_rbd(volume_file) and backup.parent_id and not backup.snapshot_id:
            LOG.debug("Volume file is NOT RBD: can't perform incremental backup.")
            raise exception.BackupRBDOperationFailed(_("volume %s is not an RBD volume: no incremental backup") % volume.id)
        json_meta = self.get_metadata(volume.id) if backup_metadata else None
        try:
            volume_metadata = metadata.pack(json_meta, backup.id)
        except metadata.MetadataTooLarge as e:
            raise exception.BackupOperationError(_("Failed to backup volume metadata - %s") % e) from None
        if backup.snapshot_id or not file_is_rbd(volume_file):
            return self._copy_backup(backup, volume, volume_file, volume_metadata)
        mode = agent_pb2.BACKUP_MODE_FULL
        if backup.parent_id and self._parent_not_ours_to_extend(backup):
            # The first incremental after a switch of drivers, or after a copy (of a Cinder snapshot): its
            # parent's data is not in the volume's rbdbackup chain, so this backup is made FULL and recorded
            # so (no parent: Cinder neither shows it as incremental nor keeps the parent from being deleted).
            LOG.warning("Backup %(id)s: its parent %(p)s was made by another backup driver or is a copy of a "
                        "snapshot, so it is made as a full backup, not an incremental.",
                        {"id": backup.id, "p": backup.parent_id})
            backup.parent_id = None
            backup.save()
        if backup.parent_id:
            self._parent_snapshot(backup)
            mode = agent_pb2.BACKUP_MODE_INCREMENTAL
        req = pb.CreateBackupRequest(
            volume=self.locator.volume_ref(volume, volume_file),
            location=common_pb2.BackupLocation(cluster=self.locator.backup_cluster(), pool=backup.container),
            mode=mode,
            volume_id=volume.id,
            volume_metadata=volume_metadata,
            idempotency_key=backup.id,
            max_snapshots=CONF.rbdbackup_max_snapshots,
        )
        LOG.debug("Starting rbdbackup backup of volume %(v)s (%(mode)s).",
                  {"v": volume.id, "mode": agent_pb2.BackupMode.Name(mode)})
        try:
            job = self.client.create_backup(req)
            # Recorded before the job is followed: should this call fail from here on (its deadline, a
            # lost watch, a cancel that comes too late), delete_backup still finds the backup the job
            # makes instead of leaving it unreferenced in the backup pool.
            backup.service_metadata = json.dumps({"rbdbackup_id": job.backup_id})
            backup.save()
            # A force-delete of this backup (status deleting) cancels its job, as Cinder's chunked
            # drivers stop; the delete itself runs in the manager's delete_backup.
            done = self._follow(
                job,
                _("backup %s") % backup.id,
                cancel=True,
                stop_when=lambda: self._status_now(backup)
                in (fields.BackupStatus.DELETING, fields.BackupStatus.DELETED),
            )
        except Stopped:
            LOG.info("Backup %(id)s is being deleted: its rbdbackup job %(job)s is cancelled.",
                     {"id": backup.id, "job": job.id})
            # Its delete may have failed meanwhile (the backup now error): returning then would let the
            # manager make it available, with its job cancelled and no data behind it.
            now = self._status_now(backup)
            if now not in (fields.BackupStatus.DELETING, fields.BackupStatus.DELETED):
                raise exception.BackupRBDOperationFailed(
                    _("backup %(id)s was being deleted while it was made (now %(s)s): its rbdbackup job "
                      "was cancelled") % {"id": backup.id, "s": now}) from None
            return {}
        except JobFailed as e:
            # Cancelled by the delete of this backup (delete_backup cancels a job still making it): the
            # backup is being deleted, not failed.
            if e.job.state == pb.JOB_STATE_CANCELLED and self._status_now(backup) in (
                fields.BackupStatus.DELETING,
                fields.BackupStatus.DELETED,
            ):
                LOG.info("Backup %(id)s was deleted while it was made: its rbdbackup job %(job)s was cancelled.",
                         {"id": backup.id, "job": job.id})
                return {}
            LOG.error("rbdbackup backup of volume %(v)s failed: %(err)s", {"v": volume.id, "err": e})
            raise exception.BackupRBDOperationFailed(str(e)) from None
        except RbdbackupError as e:
            if mode == agent_pb2.BACKUP_MODE_INCREMENTAL and e.code.name == "FAILED_PRECONDITION":
                # The parent's snapshot is gone from the volume (rbdbackup checks it at CreateBackup): Ceph's
                # error for a missing parent snapshot, not rbdbackup's advice on modes a Cinder user has not.
                parent = objects.Backup.get_by_id(self.context, backup.parent_id)
                msg = _("Can't find snapshot from parent %(incr)s and base name image %(base)s.") % {
                    "incr": backup.parent_id,
                    "base": _service_metadata(parent).get("base", "-"),
                }
                LOG.error("%(msg)s (%(err)s)", {"msg": msg, "err": e})
                raise exception.BackupRBDOperationFailed(msg) from None
            raise exception.BackupDriverException(reason=str(e)) from None
        b = done.backup
        LOG.info("Backup %(id)s of volume %(v)s is rbdbackup backup %(rid)s (%(kind)s%(why)s).", {
            "id": backup.id, "v": volume.id, "rid": b.id,
            "kind": "incremental" if b.incremental else "full",
            "why": f": {b.forced_full_reason}" if b.forced_full_reason else "",
        })
        return {"service_metadata": json.dumps({"rbdbackup_id": b.id, "base": b.base_image})}

    # --- restore --------------------------------------------------------------------------------

    def _required_id(self, backup) -> str:
        rid = rbdbackup_id(backup)
        if not rid:
            raise exception.BackupOperationError(
                _("backup %s has no rbdbackup backup (service_metadata has no rbdbackup_id)") % backup.id
            )
        return rid

    def restore(self, backup, volume_id, volume_file) -> None:
        target = self.db.volume_get(self.context, volume_id)
        rid = self._required_id(backup)
        if not file_is_rbd(volume_file):
            return self._copy_restore(backup, rid, target, volume_file)
        clients = _watching_clients(volume_file, volume_id)
        if len(clients) > 1:
            # allow_open (below) turns the agent's own in-use check off for cinder-backup's handle: a
            # second client (a VM still mapping a volume reset to available) is refused here instead.
            raise exception.BackupOperationError(
                _("volume %(v)s is open by another client besides cinder-backup (watchers %(w)s): it is "
                  "not restored over while in use") % {"v": volume_id, "w": ", ".join(clients)}
            )
        cataloged = self._check_restorable(backup, rid)
        req = pb.RestoreBackupRequest(
            backup_id=rid,
            target=self.locator.volume_ref(target, volume_file),
            mode=agent_pb2.RESTORE_MODE_ORIGINAL,
            # cinder-backup holds the volume open (volume_file) for the whole restore and writes nothing
            # through it: its own watch must not make rbdbackup refuse the volume as in use.
            allow_open=True,
            # Ceph's driver restores the data only (rbd import-diff): the target volume's own type keeps
            # deciding its QoS (Cinder's conf_rbd_qos_* image-meta), not the backed-up volume's.
            skip_image_meta=True,
            # One key per restore call, so that its retries never start a second restore; it names this
            # host, whose restores Cinder gave up on while nobody followed them are cancelled (a sweep after
            # check_for_setup_error).
            idempotency_key=_restore_key(backup.id),
        )
        LOG.debug("Restoring rbdbackup backup %(rid)s over volume %(v)s.", {"rid": rid, "v": target.name})
        job: Optional[pb.Job] = None
        try:
            job = self.client.restore_backup(req)
            _following.add(job.id)  # this process judges it (below), not the leftover sweep
            excused: dict = {}
            # Cinder cancels a restore by moving its backup out of 'restoring' (reset-state): the job is
            # cancelled and Cinder's BackupRestoreCancel raised (the manager marks the volume error).
            done = self._follow(
                job,
                _("restore of backup %s") % backup.id,
                cancel=True,
                stop_when=lambda: self._restore_cancelled(backup, rid, job, excused),
            )
        except Stopped:
            LOG.info("Restore of backup %(id)s to volume %(v)s cancelled: the backup is no longer restoring; "
                     "rbdbackup job %(job)s is cancelled.", {"id": backup.id, "v": volume_id, "job": job.id})
            raise exception.BackupRestoreCancel(back_id=backup.id, vol_id=volume_id) from None
        except RbdbackupError as e:
            LOG.error("Restore to volume %(volume)s finished with error - %(error)s.", {"volume": volume_id, "error": e})
            raise exception.BackupOperationError(str(e)) from None
        finally:
            if job is not None:
                _following.discard(job.id)
        for w in done.warnings:
            LOG.warning("Restore of backup %(id)s: %(w)s", {"id": backup.id, "w": w})
        self._grow_to_volume_size(target, volume_file, done.restore.image_size)
        self._restore_metadata(backup, volume_id, done.restore, cataloged)

    def _copy_restore(self, backup, rid: str, target, volume_file) -> None:
        """A restore onto a volume file that is not RBD: the backup streamed (ExportBackup) and written
        over the whole target — its data, zeros elsewhere and past its size — then synced, as Ceph's
        driver copies it; the metadata from the catalog's copy."""
        cataloged = self._check_restorable(backup, rid)
        length = int(target["size"]) * GiB
        LOG.debug("Restoring rbdbackup backup %(rid)s onto volume %(v)s by a copy.", {"rid": rid, "v": target.id})

        def body(proc, stopped) -> int:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass  # the child ended at once: its stderr says why
            try:
                size = copy.receive(proc.stdout, volume_file, length, stop=stopped)
            except copy.CopyError as e:
                if proc.poll() is not None:
                    relay.answer(relay.errors(proc), proc)  # the call's own failure, when it failed
                raise relay.RelayError("DATA_LOSS", str(e)) from None
            relay.wait(proc)
            relay.answer(relay.errors(proc), proc)
            return size

        excused: dict = {}
        # _restore_cancelled judges other restores of the backup against this one's start (it has no
        # RESTORE job of its own: its EXPORT job's id is known at its end).
        began = pb.Job()
        began.created_at.GetCurrentTime()

        def own(started: list) -> pb.Job:
            # This restore's own EXPORT job, once its relay named it: not taken for a sibling.
            if not began.id and started:
                began.id = relay.started_job(started[0])
            return began
        try:
            size = self._copy_checked(
                "export",
                pb.ExportBackupRequest(backup_id=rid, format=pb.DIFF_FORMAT_RBD_V1),
                body,
                lambda started: self._restore_cancelled(backup, rid, own(started), excused),
            )
        except CopyStopped as e:
            if e.error is not None:
                raise exception.BackupOperationError(
                    _("restore of backup %(id)s stopped: %(err)s") % {"id": backup.id, "err": e.error}
                ) from None
            LOG.info("Restore of backup %(id)s to volume %(v)s cancelled: the backup is no longer restoring.",
                     {"id": backup.id, "v": target.id})
            raise exception.BackupRestoreCancel(back_id=backup.id, vol_id=target.id) from None
        except relay.RelayError as e:
            LOG.error("Restore to volume %(volume)s finished with error - %(error)s.", {"volume": target.id, "error": e})
            raise exception.BackupOperationError(str(e)) from None
        try:
            fileno = volume_file.fileno()
        except (IOError, AttributeError, ValueError):
            LOG.debug("Restore target I/O object does not support fileno() - skipping call to fsync().")
        else:
            os.fsync(fileno)
        LOG.debug("Restored %(n)d bytes of backup %(rid)s onto volume %(v)s.", {"n": size, "rid": rid, "v": target.id})
        self._restore_metadata(backup, target.id, agent_pb2.RestoreResult(backup_id=rid, volume_metadata=cataloged), cataloged)

    def _check_restorable(self, backup, rid: str) -> Dict[str, str]:
        """What would fail the restore's metadata step after the volume was written over, asked before a
        byte is: the backup's metadata of a version this Cinder cannot restore, and an encrypted backup
        whose metadata (its key id) is gone. Raised as _restore_metadata raises them. Returns the catalog's
        copy of the backup's volume metadata (_restore_metadata's fallback)."""
        try:
            found = self.client.get_backup(rid)
        except RbdbackupError as e:
            raise exception.BackupOperationError(str(e)) from None
        cataloged = dict(found.volume_metadata)
        json_meta = metadata.unpack(cataloged)
        if json_meta is None:
            self._require_key_metadata(backup, cataloged)
            return cataloged
        try:
            version = json.loads(json_meta).get("version")
        except ValueError:
            version = None
        if version not in (1, 2):  # BackupMetadataAPI.put restores these
            msg = _("Metadata restore failed due to incompatible version")
            LOG.error("%(msg)s (version %(v)s): volume not restored over", {"msg": msg, "v": version})
            raise exception.BackupOperationError(msg)
        return cataloged

    def _restore_cancelled(self, backup, rid: str, job: pb.Job, excused: dict) -> bool:
        """Whether Cinder cancelled this restore: its backup left 'restoring' (reset-state). Another restore
        of the same backup ending moves it out of 'restoring' too — Cinder's manager sets it available
        when any of them ends, and volumes made from one backup at once are common (rbdbackup runs them
        side by side) — so a status write (its updated_at) within SIBLING_END_WINDOW after another Cinder
        restore of the backup ended (one that began before or during this one) is that restore's, not a
        cancel. Each such restore excuses one write (`excused`, this restore's own: the writes and the
        restores already counted), and a cancelled one none (a reset-state cancels every restore of the
        backup; the manager's write after it is the reset's): a later reset-state still cancels."""
        if self._status_now(backup) == fields.BackupStatus.RESTORING:
            return False
        changed = _naive_utc(backup.updated_at)
        if changed is not None and changed in excused.get("writes", ()):
            return False
        began = job.created_at.ToDatetime()
        used = excused.setdefault("restores", set())
        others = self.client.list_jobs(kind=pb.JOB_KIND_RESTORE, backup_id=rid)
        # A restore onto a target that is not RBD is an EXPORT job (no key: any export of the backup counts).
        others += self.client.list_jobs(kind=pb.JOB_KIND_EXPORT, backup_id=rid)
        for other in others:
            if other.id == job.id or other.id in used:
                continue
            if other.kind == pb.JOB_KIND_RESTORE and not other.idempotency_key.startswith("cinder-restore-"):
                continue
            if other.state not in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED):
                continue
            ended = other.finished_at.ToDatetime()
            if ended < began:
                continue
            if changed is None or -CLOCK_SKEW <= changed - ended <= SIBLING_END_WINDOW:
                used.add(other.id)
                excused.setdefault("writes", set()).add(changed)
                LOG.debug("Backup %(id)s left 'restoring' as restore job %(other)s ended: not a cancel of job "
                          "%(job)s.", {"id": backup.id, "other": other.id, "job": job.id})
                return False
        return True

    @staticmethod
    def _grow_to_volume_size(target, volume_file, restored_size: int) -> None:
        want = int(target["size"]) * GiB
        if restored_size and want > restored_size:
            LOG.debug("Growing volume %(v)s from %(a)d to %(b)d bytes.", {"v": target.id, "a": restored_size, "b": want})
            _native(volume_file.rbd_image).resize(want)

    @staticmethod
    def _require_key_metadata(backup, volume_metadata) -> None:
        """An encrypted backup without its Cinder metadata: every backup this driver makes carries its Cinder
        id, so none means the metadata object was lost, and with it the volume's encryption key id — the
        restored volume would not open."""
        if backup.encryption_key_id and metadata.BACKUP_KEY not in volume_metadata:
            msg = _("the metadata of backup %s is gone (its encryption key id with it)") % backup.id
            LOG.error(msg)
            raise exception.BackupOperationError(msg)

    def _restore_metadata(self, backup, volume_id: str, result, cataloged: Dict[str, str]) -> None:
        """Puts the backup's Cinder metadata back: the copy the agent read from the backup's metadata object
        (backup.<id>.meta) or, when it found none there (the object was lost: the agent's warning is
        logged), the catalog's copy of the same map — the one _check_restorable judged — so that an
        encrypted backup's key id and the volume's metadata still come back."""
        saved = dict(result.volume_metadata)
        if not saved and cataloged:
            LOG.warning("Restore of backup %(id)s: rbdbackup found no metadata object of backup %(rid)s; the "
                        "volume's metadata is restored from rbdbackup's catalog instead.",
                        {"id": backup.id, "rid": result.backup_id})
            saved = cataloged
        json_meta = metadata.unpack(saved)
        if json_meta is None:
            self._require_key_metadata(backup, saved)
            LOG.debug("Volume %s has no backed up metadata.", backup.volume_id)
            return
        try:
            self.put_metadata(volume_id, json_meta)
        except exception.BackupMetadataUnsupportedVersion:
            msg = _("Metadata restore failed due to incompatible version")
            LOG.error(msg)
            raise exception.BackupOperationError(msg) from None

    # --- delete ---------------------------------------------------------------------------------

    def delete_backup(self, backup) -> None:
        rid = rbdbackup_id(backup)
        try:
            if not rid:
                # CreateBackup's answer never came (cinder-backup stopped, or the call failed after its job
                # was made): the backup that job made carries this Cinder backup's id in its volume metadata.
                orphan = self._made_for(backup)
                if orphan is None:
                    LOG.warning("Backup %s has no rbdbackup backup: nothing to delete.", backup.id)
                    return
                rid = orphan.id
                LOG.warning("Backup %(id)s recorded no rbdbackup backup; %(rid)s was made for it: deleting that.",
                            {"id": backup.id, "rid": rid})
            found = self.client.get_backup(rid)
            if found.status == pb.BACKUP_STATUS_DELETING:
                # A delete already runs (one this host started before it restarted, or one whose wait
                # ran out): it is followed, not asked for again — a second one would be refused.
                # One listing, filtered here: a retried attempt goes RUNNING -> QUEUED, and two listings
                # (one per state) could both miss it.
                active = (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING)
                for job in self.client.list_jobs(backup_id=rid, kind=pb.JOB_KIND_DELETE):
                    if job.state in active:
                        self._follow(job, _("delete of backup %s") % backup.id, cancel=False)
                found = self.client.get_backup(rid)
            if found.status == pb.BACKUP_STATUS_CREATING and found.job_id:
                # Still being made: its job is cancelled (a cancelled backup leaves nothing), or ends anyway.
                try:
                    job = self.client.cancel_job(found.job_id)
                except RbdbackupError as e:
                    if e.code.name != "FAILED_PRECONDITION":  # the job ended meanwhile
                        raise
                    job = self.client.get_job(found.job_id)
                ended = self.client.wait(job, timeout=float(CONF.rbdbackup_job_timeout), raise_on_failure=False)
                LOG.info("The job making rbdbackup backup %(rid)s ended %(s)s.",
                         {"rid": rid, "s": pb.JobState.Name(ended.state)})
                found = self.client.get_backup(rid)
            # A delete that removed the snapshot but not the rest leaves it DELETED, "delete unfinished":
            # deleted again below, which removes what is left (its base image, its metadata).
            unfinished = found.status == pb.BACKUP_STATUS_DELETED and found.error.startswith("delete unfinished: ")
            if found.status == pb.BACKUP_STATUS_DELETED and not unfinished:
                LOG.warning("rbdbackup backup %(rid)s of backup %(id)s is already %(s)s.",
                            {"rid": rid, "id": backup.id, "s": pb.BackupStatus.Name(found.status)})
                return
            # A key of its own per call: a key names one job forever, and a delete that failed must be
            # possible again (the client's own retries within this call reuse it).
            key = f"cinder-delete-{backup.id}-{uuid.uuid4().hex[:12]}"
            if found.status == pb.BACKUP_STATUS_FAILED:
                # A failed backup's attempt may have left its snapshot and metadata on the destination (its
                # agent killed after the commit): deleted to remove them. The Cinder record goes whatever
                # that delete does: the backup never was, and the rbdbackup record stays deletable.
                try:
                    job = self.client.delete_backup(rid, idempotency_key=key)
                    self._follow(job, _("delete of backup %s") % backup.id, cancel=False)
                except (RbdbackupError, exception.BackupOperationError) as e:
                    LOG.warning("rbdbackup backup %(rid)s of backup %(id)s failed, and removing what it left "
                                "failed too (%(e)s): `rbdbackup backup delete %(rid)s` tries again.",
                                {"rid": rid, "id": backup.id, "e": e})
                return
            job = self._delete_when_free(rid, key)
            self._follow(job, _("delete of backup %s") % backup.id, cancel=False)
        except JobFailed as e:
            # The delete job failed (its backup is AVAILABLE again): not "nothing to delete", whatever its
            # code — Cinder shows error_deleting and the user may delete again.
            raise exception.BackupOperationError(str(e)) from None
        except RbdbackupError as e:
            if e.code.name == "NOT_FOUND":
                LOG.warning("rbdbackup backup %(rid)s of backup %(id)s not found: nothing to delete.",
                            {"rid": rid, "id": backup.id})
                return
            raise exception.BackupOperationError(str(e)) from None
        LOG.debug("Delete of backup '%(backup)s' for volume '%(volume)s' finished.",
                  {"backup": backup.id, "volume": backup.volume_id})

    def _delete_when_free(self, rid: str, key: str) -> pb.Job:
        """DeleteBackup; refused while another job reads the backup (a sibling restore Cinder let run
        beside this delete, a restore left running across a restart, a verify or an export): those jobs
        are waited for (each within rbdbackup_job_timeout), then the delete is asked again — a few rounds
        at most, then the refusal stands."""
        active = (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING)
        for _round in range(3):
            try:
                return self.client.delete_backup(rid, idempotency_key=key)
            except RbdbackupError as e:
                if e.code.name != "FAILED_PRECONDITION":
                    raise
                holders = [j for j in self.client.list_jobs(backup_id=rid)
                           if j.state in active and j.kind != pb.JOB_KIND_DELETE]
                if not holders:
                    raise
                for j in holders:
                    LOG.info("The delete of rbdbackup backup %(rid)s waits for its %(kind)s job %(job)s.",
                             {"rid": rid, "kind": pb.JobKind.Name(j.kind), "job": j.id})
                    self.client.wait(j, timeout=float(CONF.rbdbackup_job_timeout), raise_on_failure=False)
        return self.client.delete_backup(rid, idempotency_key=key)

    def _made_for(self, backup) -> Optional[pb.Backup]:
        """The rbdbackup backup a job made for Cinder backup `backup` (its id in the volume metadata)."""
        for b in self.client.list_backups(volume_id=backup.volume_id):
            if b.volume_metadata.get(metadata.BACKUP_KEY) == backup.id:
                return b
        return None

    # --- records --------------------------------------------------------------------------------

    def export_record(self, backup) -> dict:
        from google.protobuf import json_format

        try:
            record = self.client.export_backup_record(self._required_id(backup))
        except RbdbackupError as e:
            raise exception.BackupOperationError(str(e)) from None
        return {"rbdbackup_record": json_format.MessageToDict(record, preserving_proto_field_name=True)}

    def import_record(self, backup, driver_info: dict) -> None:
        from google.protobuf import json_format

        raw = (driver_info or {}).get("rbdbackup_record")
        if not isinstance(raw, dict):
            raise exception.InvalidBackup(reason=_("the record has no rbdbackup_record (exported by another driver?)"))
        try:
            # Fields this release does not know (a record exported by a newer rbdbackup) are left out: the
            # coordinator judges what is there, as it would the same record from an exporter of this release.
            record = json_format.ParseDict(raw, pb.BackupRecord(), ignore_unknown_fields=True)
        except json_format.ParseError as e:
            raise exception.InvalidBackup(reason=_("rbdbackup_record does not parse: %s") % e) from None
        if not record.backup.id:
            raise exception.InvalidBackup(reason=_("rbdbackup_record names no backup (backup.id is missing)"))
        try:
            try:
                imported = self.client.import_backup_record(record)
            except RbdbackupError as e:
                if e.code.name != "ALREADY_EXISTS":
                    raise
                imported = self.client.get_backup(record.backup.id)  # known here already: fine if usable
                # ...and if it is the backup the record describes: a record naming a known id with another
                # volume or place would make this Cinder backup restore someone else's data.
                differs = _record_differs(record.backup, imported)
                if differs:
                    raise exception.InvalidBackup(
                        reason=_("rbdbackup backup %(id)s exists here and differs from the record (%(what)s): not imported")
                        % {"id": record.backup.id, "what": differs}
                    )
        except RbdbackupError as e:
            if e.code.name in ("FAILED_PRECONDITION", "INVALID_ARGUMENT"):
                # The record names data that is not there (a backup deleted long ago, whose record the
                # catalog no longer keeps: catalog.historyDays), or it is not a record the coordinator takes.
                raise exception.InvalidBackup(reason=str(e)) from None
            raise exception.BackupOperationError(str(e)) from None
        if imported.status not in (pb.BACKUP_STATUS_AVAILABLE, pb.BACKUP_STATUS_CORRUPT):
            # A deleted backup's record, still in the catalog (for catalog.historyDays): it names no data.
            raise exception.InvalidBackup(
                reason=_("rbdbackup backup %(id)s is %(s)s: its record cannot be imported")
                % {"id": imported.id, "s": pb.BackupStatus.Name(imported.status)}
            )
        if imported.status == pb.BACKUP_STATUS_CORRUPT:
            LOG.warning("rbdbackup backup %s is CORRUPT: a restore of it is refused until it is verified again.",
                        imported.id)
        if rbdbackup_id(backup) != imported.id:
            backup.service_metadata = json.dumps({"rbdbackup_id": imported.id, "base": imported.base_image})
            backup.save()
