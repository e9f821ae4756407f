"""RbdbackupBackupDriver driven the way Cinder's backup manager drives a backup driver: real Cinder 21
modules (python3-cinder), real cinder.objects Backup/Volume rows on Cinder's own test database
(cinder.tests.unit.test.TestCase, eventlet monkey-patched as cinder-backup is), os-brick's
RBDVolumeIOWrapper over real lab images, and a real coordinator with agents for site-a (volumes) and
site-b (backups). Data is compared with sha256 of `rbd export`.

Run through test/integration/openstack/cinder.test.ts, which starts the daemons and writes the config.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import re
import socket
import struct
import tempfile
import unittest
import uuid

import grpc
import rbd
from cinder import context, db, exception, objects
from cinder.objects import fields
from cinder.backup.drivers import ceph
from cinder.tests.unit import test
from cinder.tests.unit import utils as test_utils

from lab import GiB, Lab, test_config
from rbdbackup_cinder import RbdbackupBackupDriver, copy
from rbdbackup_cinder.driver import rbdbackup_id
from rbdbackup_client import Client, ClientConfig, JobFailed, RbdbackupError, agent_pb2, backup_service_pb2 as pb, common_pb2

CFG = test_config()
LAB = Lab(CFG["lab_dir"])
SRC = ("site-a", "rbd")  # the Cinder volume backend "ceph-a"
# The cluster keeping the backups, and the Cinder volume backend "ceph-b" where the second coordinator
# restores (its agent's cluster): site-b as cinder.test.ts configures it.
BACKUPS = CFG.get("backup_cluster", "site-b")
DST = (CFG.get("second_site", "site-b"), "rbd")


def tearDownModule():
    LAB.close()


class DriverTestCase(test.TestCase):
    """Cinder's test fixture, the driver configured for the lab's first coordinator."""

    def setUp(self):
        super().setUp()
        self.ctxt = context.get_admin_context()
        self.override_config("rbdbackup_coordinators", [CFG["coordinator"]])
        self.override_config("rbdbackup_ca_file", CFG["ca"])
        self.override_config("rbdbackup_cert_file", CFG["cert"])
        self.override_config("rbdbackup_key_file", CFG["key"])
        self.override_config("rbdbackup_backup_cluster", BACKUPS)
        self.override_config("rbdbackup_backup_pool", "backups")
        self.override_config("rbdbackup_cluster_map", {"ceph-a": SRC[0], "ceph-b": DST[0]})
        self.override_config("rbdbackup_job_timeout", 240)
        self.override_config("rbdbackup_backoff_base", 0.1)
        self.driver = RbdbackupBackupDriver(self.ctxt)
        self.addCleanup(lambda: self.driver._client and self.driver._client.close())
        # The setup check's leftover-restore sweep never runs by itself here (it would judge this suite's
        # own restores, whose volumes are not 'restoring-backup'): the tests of it run it by hand.
        from rbdbackup_cinder import driver as drv

        drv._sweep["started"] = False
        self.mock_object(drv, "_later", lambda delay, fn: None)

    # --- fixtures -------------------------------------------------------------------------------

    def volume(self, where=SRC, size_gib=1, image=True, writes=40, **kw):
        """A Cinder volume row on backend ceph-a (site-a) or ceph-b (site-b) and, when `image`, its RBD
        image volume-<id> with `writes` random writes (removed at the end, with its snapshots)."""
        backend = "ceph-a" if where == SRC else "ceph-b"
        vol = test_utils.create_volume(self.ctxt, host=f"node@{backend}#{where[1]}", size=size_gib, **kw)
        if image:
            LAB.create(*where, vol.name, size_gib * GiB)
            self.addCleanup(LAB.remove, *where, vol.name)
            if writes:
                LAB.write_random(*where, vol.name, writes)
        return vol

    def volume_file(self, vol, where=SRC):
        f = LAB.volume_file(*where, vol.name)
        self.addCleanup(f.close)
        return f

    def cinder_backup(self, vol, parent=None):
        b = test_utils.create_backup(self.ctxt, volume_id=vol.id, parent_id=parent.id if parent else None)
        # As the backup API makes it when no container is asked for: the driver picks its pool.
        b.container = None
        b.save()
        return objects.Backup.get_by_id(self.ctxt, b.id)

    def do_backup(self, vol, parent=None, driver=None):
        """driver.backup as the backup manager calls it, and the updates saved as it saves them."""
        b = self.cinder_backup(vol, parent)
        updates = (driver or self.driver).backup(b, self.volume_file(vol))
        b.update(updates)
        b.save()
        self.addCleanup(self.delete_quietly, b)
        return b

    def restore(self, b, volume_id, volume_file, driver=None):
        """driver.restore as the backup manager calls it: the backup is 'restoring' meanwhile (the
        driver cancels a restore whose backup leaves that status), then available again."""
        b = objects.Backup.get_by_id(self.ctxt, b.id)
        b.status = fields.BackupStatus.RESTORING
        b.save()
        try:
            return (driver or self.driver).restore(b, volume_id, volume_file)
        finally:
            b.status = fields.BackupStatus.AVAILABLE
            b.save()

    def set_status(self, b, status):
        """The backup's row in Cinder's database gets `status` (what the manager or an admin writes); returns the row."""
        row = objects.Backup.get_by_id(self.ctxt, b.id)
        row.status = status
        row.save()
        return row

    def delete_quietly(self, b):
        # The backup manager's delete, at the end of every test that made one (a second delete warns only).
        self.driver.delete_backup(objects.Backup.get_by_id(self.ctxt, b.id))

    def ours(self, b) -> pb.Backup:
        return self.driver.client.get_backup(rbdbackup_id(b))


class BackupRestoreDeleteTest(DriverTestCase):
    def test_full_incremental_restore_over_original_delete(self):
        vol = self.volume(metadata={"purpose": "db"}, display_name="vol-src")
        b1 = self.do_backup(vol)
        r1 = self.ours(b1)
        self.assertEqual(pb.BACKUP_STATUS_AVAILABLE, r1.status)
        self.assertFalse(r1.incremental)
        self.assertEqual(vol.id, r1.volume_id)
        self.assertEqual(("site-a", "rbd", vol.name), (r1.volume.cluster, r1.volume.pool, r1.volume.image))
        self.assertEqual((BACKUPS, "backups"), (r1.location.cluster, r1.location.pool))
        self.assertEqual("backups", b1.container)
        self.assertEqual({"rbdbackup_id": r1.id, "base": r1.base_image}, json.loads(b1.service_metadata))
        # Layout of Ceph's driver: base image <volume name>.backup.<id>, snapshot backup.<id>.snap.<ts>
        # on both sides, matching Ceph's own pattern (read back by Ceph's own get_backup_snaps).
        self.assertEqual(f"{vol.name}.backup.{r1.id}", r1.base_image)
        m = re.match(ceph.CephBackupDriver.backup_snapshot_name_pattern(), r1.snapshot)
        self.assertIsNotNone(m)
        self.assertEqual(r1.id, m.group(1))
        self.assertEqual(self.driver.backup_snapshot_name_pattern(), ceph.CephBackupDriver.backup_snapshot_name_pattern())
        self.assertIn(r1.snapshot, LAB.snaps(BACKUPS, "backups", r1.base_image))
        f = self.volume_file(vol)
        found = ceph.CephBackupDriver.get_backup_snaps(f.rbd_image)
        self.assertEqual([r1.id], [s["backup_id"] for s in found])
        sha1 = LAB.export_sha256("site-a", f"rbd/{vol.name}@{r1.snapshot}")

        LAB.write_random(*SRC, vol.name, 10)
        b2 = self.do_backup(vol, parent=b1)
        r2 = self.ours(b2)
        self.assertTrue(r2.incremental)
        self.assertEqual(r1.snapshot, r2.parent_snapshot)
        self.assertEqual(r1.base_image, r2.base_image)
        sha2 = LAB.export_sha256("site-a", f"rbd/{vol.name}@{r2.snapshot}")
        self.assertNotEqual(sha1, sha2)

        # The volume changes (data, metadata, name); restore over it puts the backup's bytes and metadata back.
        LAB.write_random(*SRC, vol.name, 20)
        db.volume_metadata_update(self.ctxt, vol.id, {"purpose": "scratch", "extra": "x"}, True)
        db.volume_update(self.ctxt, vol.id, {"display_name": "renamed"})
        self.restore(b2, vol.id, self.volume_file(vol))
        self.assertEqual(sha2, LAB.export_sha256("site-a", f"rbd/{vol.name}"))
        self.assertEqual({"purpose": "db"}, db.volume_metadata_get(self.ctxt, vol.id))
        # Cinder's v2 rule: the name comes back only to a volume named restore_backup_*.
        self.assertEqual("renamed", db.volume_get(self.ctxt, vol.id).display_name)
        self.assertEqual(1 * GiB, LAB.size(*SRC, vol.name))
        # Restoring the full backup (any point of the chain, one pass).
        self.restore(b1, vol.id, self.volume_file(vol))
        self.assertEqual(sha1, LAB.export_sha256("site-a", f"rbd/{vol.name}"))

        # Delete, newest first (Cinder refuses to delete a backup with dependents).
        self.driver.delete_backup(b2)
        self.assertEqual(pb.BACKUP_STATUS_DELETED, self.ours(b2).status)
        self.assertNotIn(r2.snapshot, LAB.snaps(BACKUPS, "backups", r1.base_image))
        self.driver.delete_backup(b1)
        self.assertEqual(pb.BACKUP_STATUS_DELETED, self.ours(b1).status)
        self.assertFalse(LAB.exists(BACKUPS, "backups", r1.base_image))
        # Deleting again is a warning, as Ceph's driver on a missing image.
        self.driver.delete_backup(b1)

    def test_restore_to_a_larger_volume_keeps_its_size_and_zeros_the_tail(self):
        vol = self.volume()
        b = self.do_backup(vol)
        r = self.ours(b)
        # What the 2 GiB target must hold: the backup, then 1 GiB of zeros (Ceph's driver discards the
        # excess and keeps the target's size, restore_discard_excess_bytes).
        want = LAB.export_sha256("site-a", f"rbd/{vol.name}@{r.snapshot}", pad_zeros=1 * GiB)
        big = self.volume(size_gib=2, writes=0)
        LAB.write_random(*SRC, big.name, 5, span=2 * GiB)
        self.restore(b, big.id, self.volume_file(big))
        self.assertEqual(2 * GiB, LAB.size(*SRC, big.name))
        self.assertEqual(want, LAB.export_sha256("site-a", f"rbd/{big.name}"))

    def test_same_cinder_backup_twice_is_one_backup(self):
        # Ceph's metadata object is written once ("already exists" on a second set, content unchanged);
        # here the Cinder backup id is the idempotency key: a repeated call returns the same backup.
        vol = self.volume(metadata={"k": "v1"})
        b = self.cinder_backup(vol)
        first = self.driver.backup(b, self.volume_file(vol))
        b.update(first)
        b.save()
        self.addCleanup(self.delete_quietly, b)
        again = self.driver.backup(b, self.volume_file(vol))
        self.assertEqual(first, again)
        listed = self.driver.client.list_backups(volume_id=vol.id)
        self.assertEqual([rbdbackup_id(b)], [x.id for x in listed])

    def test_a_volume_another_client_has_open_is_not_restored_over(self):
        import rados
        import rbd

        vol = self.volume(writes=3)
        b = self.do_backup(vol)
        LAB.write_random(*SRC, vol.name, 5)
        before = LAB.export_sha256("site-a", f"rbd/{vol.name}")
        # A VM still maps it (a volume reset to available while attached): another client's watch.
        client = rados.Rados(conffile=LAB.conf(SRC[0]), rados_id="admin")
        client.connect(timeout=30)
        io = client.open_ioctx(SRC[1])
        vm = rbd.Image(io, vol.name)
        try:
            e = self.assertRaises(exception.BackupOperationError, self.restore, b, vol.id, self.volume_file(vol))
            self.assertIn("is open by another client besides cinder-backup", str(e))
        finally:
            vm.close()
            io.close()
            client.shutdown()
        self.assertEqual(before, LAB.export_sha256("site-a", f"rbd/{vol.name}"), "nothing written")
        self.restore(b, vol.id, self.volume_file(vol))  # closed: restored

    def test_the_targets_own_qos_image_meta_is_kept(self):
        # Cinder's RBD driver keeps a volume type's QoS as conf_rbd_qos_* image-meta: a restore into a
        # volume of another type must not carry the backed-up volume's limits over (Ceph's driver does not).
        import rbd

        vol = self.volume(writes=2)
        io = LAB.ioctx(*SRC)
        with rbd.Image(io, vol.name) as img:
            img.metadata_set("conf_rbd_qos_iops_limit", "100")
        b = self.do_backup(vol)
        target = self.volume(writes=0)
        with rbd.Image(io, target.name) as img:
            img.metadata_set("conf_rbd_qos_iops_limit", "5000")
        self.restore(b, target.id, self.volume_file(target))
        with rbd.Image(io, target.name, read_only=True) as img:
            self.assertEqual({"conf_rbd_qos_iops_limit": "5000"}, dict(img.metadata_list()))
        io.close()

    def test_metadata_of_an_unknown_version_fails_the_restore_clearly(self):
        self.override_config("backup_metadata_version", 3)
        vol = self.volume(metadata={"k": "v"})
        b = self.do_backup(vol)
        before = self.driver.client.list_jobs(backup_id=rbdbackup_id(b), kind=pb.JOB_KIND_RESTORE)
        e = self.assertRaises(exception.BackupOperationError, self.restore, b, vol.id, self.volume_file(vol))
        self.assertEqual("Metadata restore failed due to incompatible version", str(e))
        # Known before a byte is written: no restore job was asked for, the volume is as it was.
        self.assertEqual(before, self.driver.client.list_jobs(backup_id=rbdbackup_id(b), kind=pb.JOB_KIND_RESTORE))

    def test_a_lost_metadata_object_is_made_up_for_by_the_catalogs_copy(self):
        # The agent reads a restore's metadata from backup.<id>.meta, and finds none when that object is
        # lost; the catalog keeps the same map (given at CreateBackup). An encrypted backup's restore
        # passed the pre-check on the catalog's copy, then failed after writing the volume over, with
        # neither its key id nor the volume's metadata put back.
        vol = self.volume(writes=3, metadata={"purpose": "db"})
        b = self.do_backup(vol)
        rid = rbdbackup_id(b)
        sha = LAB.export_sha256("site-a", f"rbd/{vol.name}@{self.ours(b).snapshot}")
        with LAB.ioctx(BACKUPS, "backups") as io:
            io.remove_object(f"backup.{rid}.meta")
        b = objects.Backup.get_by_id(self.ctxt, b.id)
        b.encryption_key_id = str(uuid.uuid4())  # what Cinder records for an encrypted volume's backup
        b.save()
        LAB.write_random(*SRC, vol.name, 5)
        db.volume_metadata_update(self.ctxt, vol.id, {"purpose": "scratch"}, True)
        self.restore(b, vol.id, self.volume_file(vol))
        self.assertEqual(sha, LAB.export_sha256("site-a", f"rbd/{vol.name}"))
        self.assertEqual({"purpose": "db"}, db.volume_metadata_get(self.ctxt, vol.id))

    def test_a_target_whose_clients_cannot_be_listed_is_not_restored_over(self):
        # The restore switches the agent's in-use check off for cinder-backup's own handle (allow_open):
        # the driver's list of the volume's clients is the check left, and one it cannot make refuses the
        # restore (before, it counted as nobody, and a volume a VM still used was restored over).
        vol = self.volume(writes=3)
        b = self.do_backup(vol)
        LAB.write_random(*SRC, vol.name, 5)
        before = LAB.export_sha256("site-a", f"rbd/{vol.name}")
        jobs = self.driver.client.list_jobs(backup_id=rbdbackup_id(b), kind=pb.JOB_KIND_RESTORE)

        class Unlistable:
            def watchers_list(self):
                raise OSError("the listing failed (injected)")

        f = type("RBDWrapper", (), {"rbd_image": Unlistable(), "rbd_pool": SRC[1]})()
        e = self.assertRaises(exception.BackupOperationError, self.restore, b, vol.id, f)
        self.assertIn(f"could not list the clients that have volume {vol.id} open", str(e))
        self.assertIn("the listing failed (injected)", str(e))
        self.assertEqual(jobs, self.driver.client.list_jobs(backup_id=rbdbackup_id(b), kind=pb.JOB_KIND_RESTORE),
                         "no restore job asked for")
        self.assertEqual(before, LAB.export_sha256("site-a", f"rbd/{vol.name}"), "nothing written")

    def test_the_first_incremental_after_another_drivers_backup_is_made_full(self):
        # Switching from Cinder's Ceph driver: Cinder's API takes the volume's newest backup — Ceph's — as
        # the parent of the next `--incremental`. Nothing of rbdbackup's to chain from: a full backup,
        # its parent dropped (Cinder keeps the other driver's backup deletable).
        vol = self.volume(writes=3)
        ceph_made = self.cinder_backup(vol)
        ceph_made.service = "cinder.backup.drivers.ceph.CephBackupDriver"
        ceph_made.service_metadata = json.dumps({"base": f"{vol.name}.backup.base"})
        ceph_made.status = fields.BackupStatus.AVAILABLE
        ceph_made.save()
        b = self.cinder_backup(vol, parent=ceph_made)
        b.service = "rbdbackup_cinder.driver.RbdbackupBackupDriver"  # the manager's driver_name
        b.save()
        b.update(self.driver.backup(b, self.volume_file(vol)))
        b.save()
        self.addCleanup(self.delete_quietly, b)
        r = self.ours(b)
        self.assertEqual(pb.BACKUP_STATUS_AVAILABLE, r.status)
        self.assertFalse(r.incremental)
        self.assertIsNone(objects.Backup.get_by_id(self.ctxt, b.id).parent_id)
        # The next incremental chains from it, as any.
        b2 = self.do_backup(vol, parent=b)
        self.assertTrue(self.ours(b2).incremental)


class ErrorTest(DriverTestCase):
    def test_incremental_without_a_usable_parent(self):
        vol = self.volume()
        # A parent the driver never backed up (Ceph: its snapshot cannot be found).
        never = self.cinder_backup(vol)
        b = self.cinder_backup(vol, parent=never)
        e = self.assertRaises(exception.BackupRBDOperationFailed, self.driver.backup, b, self.volume_file(vol))
        self.assertIn(f"Can't find snapshot from parent {never.id}", str(e))
        # A parent that was deleted.
        b1 = self.do_backup(vol)
        self.driver.delete_backup(b1)
        b2 = self.cinder_backup(vol, parent=b1)
        e = self.assertRaises(exception.BackupRBDOperationFailed, self.driver.backup, b2, self.volume_file(vol))
        self.assertIn(f"Can't find snapshot from parent {b1.id} and base name image", str(e))
        # No backup was made by either refusal.
        statuses = [pb.BackupStatus.Name(x.status) for x in self.driver.client.list_backups(volume_id=vol.id, status=0)]
        self.assertEqual([], statuses)
        # A parent kept in another container (pool) than this backup's: Ceph's driver cannot find its base
        # image there either; rbdbackup would have chained from another backup.
        self.override_config("rbdbackup_allowed_containers", ["rbd"])
        b3 = self.do_backup(vol)
        b4 = self.cinder_backup(vol, parent=b3)
        b4.container = "rbd"
        b4.save()
        e = self.assertRaises(exception.BackupRBDOperationFailed, self.driver.backup, b4, self.volume_file(vol))
        self.assertIn(f"Can't find snapshot from parent {b3.id}", str(e))
        self.assertEqual([rbdbackup_id(b3)], [x.id for x in self.driver.client.list_backups(volume_id=vol.id)])
        # A parent whose snapshot is gone from the volume (removed by hand): rbdbackup refuses the
        # incremental at CreateBackup (FAILED_PRECONDITION), and the user reads Ceph's error, not its advice.
        with LAB.ioctx(*SRC) as io, rbd.Image(io, vol.name) as img:
            img.remove_snap(self.ours(b3).snapshot)
        b5 = self.cinder_backup(vol, parent=b3)
        e = self.assertRaises(exception.BackupRBDOperationFailed, self.driver.backup, b5, self.volume_file(vol))
        self.assertIn(f"Can't find snapshot from parent {b3.id} and base name image", str(e))
        self.assertNotIn("use AUTO or FULL", str(e))

    def test_a_container_outside_the_allowed_ones_is_refused_before_any_job(self):
        # Any Cinder user may name a backup's container, which is the pool rbdbackup writes the backup
        # into: only rbdbackup_backup_pool and rbdbackup_allowed_containers are taken.
        vol = self.volume(writes=1)
        for container in ("rbd", "backups-other"):
            b = self.cinder_backup(vol)
            b.container = container
            b.save()
            self.addCleanup(self.delete_quietly, b)  # a backup made there (this test failing) is not left behind
            e = self.assertRaises(exception.InvalidBackup, self.driver.backup, b, self.volume_file(vol))
            self.assertIn(f"container '{container}' is not a pool this cloud keeps backups in (backups)", str(e))
            self.assertIn("rbdbackup_allowed_containers", str(e))
        self.assertEqual([], self.driver.client.list_backups(volume_id=vol.id), "no job made a backup")
        self.assertEqual([], LAB.snaps(*SRC, vol.name), "nor a snapshot of the volume")
        # The configured pool, named: taken.
        b = self.cinder_backup(vol)
        b.container = "backups"
        b.save()
        b.update(self.driver.backup(b, self.volume_file(vol)))
        b.save()
        self.addCleanup(self.delete_quietly, b)
        self.assertEqual((BACKUPS, "backups"), (self.ours(b).location.cluster, self.ours(b).location.pool))

    def test_non_rbd_volume_with_a_parent(self):
        # Ceph's driver: no incremental of a volume that is not RBD (the copies are full; CopiedBackupTest).
        vol = self.volume(image=False)
        parent = self.do_backup(self.volume())
        b2 = self.cinder_backup(vol, parent=parent)
        self.assertRaises(exception.BackupRBDOperationFailed, self.driver.backup, b2, io.BytesIO(b""))

    def test_zero_size_volume(self):
        vol = self.volume(size_gib=0, image=False)
        b = self.cinder_backup(vol)
        e = self.assertRaises(exception.InvalidParameterValue, self.driver.backup, b, io.BytesIO())
        self.assertEqual("Need non-zero volume size", str(e))

    def test_missing_volume(self):
        # The Cinder row exists, its RBD image does not (removed behind Cinder's back). A stand-in for
        # os-brick's wrapper (it could not open the image): the driver reads only its pool.
        vol = self.volume(image=False)
        b = self.cinder_backup(vol)
        gone = type("RBDWrapperOfMissingImage", (), {"rbd_image": None, "rbd_pool": "rbd"})()
        e = self.assertRaises(exception.CinderException, self.driver.backup, b, gone)
        self.assertIn(vol.name, str(e))
        self.assertIn("NOT_FOUND", str(e))
        self.assertNotIn("Traceback", str(e))

    def test_coordinator_down(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        self.override_config("rbdbackup_coordinators", [f"127.0.0.1:{port}"])
        self.override_config("rbdbackup_call_attempts", 2)
        self.override_config("rbdbackup_call_timeout", 5)
        driver = RbdbackupBackupDriver(self.ctxt)
        self.addCleanup(driver.client.close)
        vol = self.volume(writes=1)
        e = self.assertRaises(exception.BackupDriverException, driver.backup, self.cinder_backup(vol), self.volume_file(vol))
        msg = str(e)
        self.assertTrue(msg.startswith("Backup driver reported an error: rbdbackup coordinator 127.0.0.1:"), msg)
        self.assertIn("UNAVAILABLE", msg)
        self.assertNotIn("Traceback", msg)
        # Cinder runs the setup check once: a coordinator not up yet is a warning, not a service down for good.
        self.assertIsNone(driver.check_for_setup_error())


class CopyStreamTest(unittest.TestCase):
    """The copy's stream (rbdbackup_cinder/copy.py) without Ceph: a volume file to an rbd diff v1 stream and back."""

    def test_round_trip_leaves_zero_chunks_out_and_zeros_every_byte_it_does_not_name(self):
        data = os.urandom(copy.CHUNK) + bytes(2 * copy.CHUNK) + os.urandom(copy.CHUNK + 12345)
        stream = io.BytesIO()
        sent = copy.send(io.BytesIO(data), len(data), stream)
        self.assertEqual(2 * copy.CHUNK + 12345, sent)
        self.assertLess(len(stream.getvalue()), len(data) - 2 * copy.CHUNK + 100, "zero chunks are not sent")
        target = io.BytesIO(b"\xff" * (len(data) + 5000))  # larger than the backup, old data everywhere
        self.assertEqual(len(data), copy.receive(io.BytesIO(stream.getvalue()), target, len(data) + 5000))
        self.assertEqual(data + bytes(5000), target.getvalue())

    def test_a_file_shorter_than_the_volume_reads_as_zeros_past_its_end(self):
        data = os.urandom(1000)
        stream = io.BytesIO()
        copy.send(io.BytesIO(data), 3 * copy.CHUNK, stream)
        target = io.BytesIO(b"\xff" * (3 * copy.CHUNK))
        self.assertEqual(3 * copy.CHUNK, copy.receive(io.BytesIO(stream.getvalue()), target, 3 * copy.CHUNK))
        self.assertEqual(data + bytes(3 * copy.CHUNK - 1000), target.getvalue())

    def test_a_long_run_of_zeros_still_sends_now_and_then_and_holes_are_zeroed_after_the_stream(self):
        data = bytes(3 * copy.CHUNK) + os.urandom(100)
        stream = io.BytesIO()
        # keepalive_s=0: every chunk goes out, zeros too (rbdbackup's 10-minute idle rule never trips).
        self.assertEqual(len(data), copy.send(io.BytesIO(data), len(data), stream, keepalive_s=0))

        class Recording(io.BytesIO):
            def __init__(self):
                super().__init__(b"\xff" * len(data))
                self.kinds = []

            def write(self, b):
                self.kinds.append("zeros" if not any(b) else "data")
                return super().write(b)

        sparse = io.BytesIO()
        copy.send(io.BytesIO(data), len(data), sparse)
        target = Recording()
        copy.receive(io.BytesIO(sparse.getvalue()), target, len(data))
        self.assertEqual(data, target.getvalue())
        # The data as it streams, the zeros once the stream ended (its reader never waits on them).
        self.assertEqual(["data"], target.kinds[:1])
        self.assertEqual({"zeros"}, set(target.kinds[1:]))

    def test_a_real_file_target_gets_its_holes_zeroed_and_its_length(self):
        # A regular file: the holes are punched (or written where the file system cannot), the tail grown.
        data = os.urandom(1000) + bytes(2 * copy.CHUNK) + os.urandom(copy.CHUNK)
        stream = io.BytesIO()
        copy.send(io.BytesIO(data), len(data), stream)
        with tempfile.TemporaryFile() as f:
            f.write(b"\xff" * (len(data) - 100))  # old data, shorter than the target
            copy.receive(io.BytesIO(stream.getvalue()), f, len(data) + 3000)
            f.seek(0)
            self.assertEqual(data + bytes(3000), f.read())

    def test_a_stop_ends_either_side_at_the_next_chunk(self):
        data = os.urandom(3 * copy.CHUNK)
        with self.assertRaises(copy.CopyError) as caught:
            copy.send(io.BytesIO(data), len(data), io.BytesIO(), stop=lambda: True)
        self.assertEqual("stopped", str(caught.exception))
        stream = io.BytesIO()
        copy.send(io.BytesIO(data), len(data), stream)
        with self.assertRaises(copy.CopyError) as caught:
            copy.receive(io.BytesIO(stream.getvalue()), io.BytesIO(), len(data), stop=lambda: True)
        self.assertEqual("stopped", str(caught.exception))

    def test_bad_streams_are_refused(self):
        stream = io.BytesIO()
        copy.send(io.BytesIO(os.urandom(5000)), 5000, stream)
        good = stream.getvalue()
        for bad, why in (
            (good[:-1], "ended inside"),
            (good[:40], "ended inside"),
            (b"rbd diff v2\n" + good[12:], "not an rbd diff v1"),
            (good[:12] + b"q", "unknown record"),
            (good[:21] + b"w" + struct.pack("<QQ", 4990, 20) + bytes(20) + b"e", "past the backup's size"),
        ):
            with self.subTest(why=why), self.assertRaises(copy.CopyError) as caught:
                copy.receive(io.BytesIO(bad), io.BytesIO(), 5000)
            self.assertIn(why, str(caught.exception))
        with self.assertRaises(copy.CopyError) as caught:
            copy.receive(io.BytesIO(good), io.BytesIO(), 4999)
        self.assertIn("more than the target's 4999", str(caught.exception))


class CopiedBackupTest(DriverTestCase):
    """Volumes that are not RBD, and Cinder snapshots: full copies through ImportBackup, as Ceph's driver
    copies them; restored onto files (ExportBackup) and onto RBD volumes (RestoreBackup)."""

    def file_volume(self, vol, pieces):
        """A sparse file of the volume's size standing for its attached device, with random data at the
        (offset, length) pieces; returns it open and its sha256."""
        f = tempfile.TemporaryFile()
        self.addCleanup(f.close)
        f.truncate(int(vol.size) * GiB)
        for off, n in pieces:
            f.seek(off)
            f.write(os.urandom(n))
        return f, sha256_of(f)

    def test_a_volume_that_is_not_rbd_is_copied_and_restored_onto_a_file_and_onto_rbd(self):
        vol = self.volume(image=False, metadata={"kind": "lvm"})
        f, want = self.file_volume(vol, [(0, 3 * 1024 * 1024), (100 * 1024 * 1024 + 17, 5 * 1024 * 1024),
                                         (GiB - 1024 * 1024, 1024 * 1024)])
        b = self.cinder_backup(vol)
        b.update(self.driver.backup(b, f))
        b.save()
        self.addCleanup(self.delete_quietly, b)
        r = self.ours(b)
        self.assertEqual(pb.BACKUP_STATUS_AVAILABLE, r.status)
        self.assertEqual((BACKUPS, "cinder-copies", vol.name), (r.volume.cluster, r.volume.pool, r.volume.image))
        self.assertEqual((BACKUPS, "backups"), (r.location.cluster, r.location.pool))
        self.assertEqual({"rbdbackup_id": r.id, "base": r.base_image, "copy": True}, json.loads(b.service_metadata))
        self.assertEqual(want, LAB.export_sha256(BACKUPS, f"backups/{r.base_image}@{r.snapshot}"))
        # Onto a file volume holding other data: every byte rewritten; the metadata back.
        db.volume_metadata_update(self.ctxt, vol.id, {"kind": "changed"}, True)
        target, _ = self.file_volume(vol, [(0, 8 * 1024 * 1024), (500 * 1024 * 1024, 1024 * 1024)])
        self.restore(b, vol.id, target)
        self.assertEqual(want, sha256_of(target))
        self.assertEqual({"kind": "lvm"}, db.volume_metadata_get(self.ctxt, vol.id))
        # Onto an RBD volume: rbdbackup's own restore.
        rvol = self.volume(writes=5)
        self.restore(b, rvol.id, self.volume_file(rvol))
        self.assertEqual(want, LAB.export_sha256("site-a", f"rbd/{rvol.name}"))
        self.driver.delete_backup(b)
        self.assertEqual(pb.BACKUP_STATUS_DELETED, self.ours(b).status)
        self.assertFalse(LAB.exists(BACKUPS, "backups", r.base_image))

    def test_a_snapshot_backup_is_a_full_copy_and_the_next_incremental_is_full(self):
        vol = self.volume(writes=10)
        first = self.do_backup(vol)
        snap = test_utils.create_snapshot(self.ctxt, vol.id)
        b = test_utils.create_backup(self.ctxt, volume_id=vol.id, snapshot_id=snap.id, parent_id=first.id)
        b.container = None
        taken = datetime.datetime(2026, 1, 2, 3, 4, 5)  # the manager sets data_timestamp to the snapshot's created_at
        b.data_timestamp = taken
        b.save()
        b = objects.Backup.get_by_id(self.ctxt, b.id)
        # The manager hands the attached snapshot; here the volume's image, unchanged since, stands for it.
        want = LAB.export_sha256("site-a", f"rbd/{vol.name}")
        b.update(self.driver.backup(b, self.volume_file(vol)))
        b.save()
        self.addCleanup(self.delete_quietly, b)
        r = self.ours(b)
        self.assertFalse(r.incremental)
        self.assertIsNone(objects.Backup.get_by_id(self.ctxt, b.id).parent_id, "a full copy: its parent dropped")
        # Listed under the snapshot's name: a backup of the volume itself may run beside it.
        self.assertEqual((BACKUPS, "cinder-copies", f"snapshot-{snap.id}"), (r.volume.cluster, r.volume.pool, r.volume.image))
        self.assertEqual(taken, r.created_at.ToDatetime(), "dated by the snapshot's data, not the copy")
        self.assertEqual(want, LAB.export_sha256(BACKUPS, f"backups/{r.base_image}@{r.snapshot}"))
        self.assertEqual(
            [rbdbackup_id(first)], [s["backup_id"] for s in ceph.CephBackupDriver.get_backup_snaps(self.volume_file(vol).rbd_image)],
            "a copy leaves no snapshot on the volume",
        )
        # Cinder takes the copy as the next incremental's parent: nothing of the volume's chain to extend.
        b2 = self.cinder_backup(vol, parent=b)
        b2.update(self.driver.backup(b2, self.volume_file(vol)))
        b2.save()
        self.addCleanup(self.delete_quietly, b2)
        self.assertFalse(self.ours(b2).incremental)
        self.assertIsNone(objects.Backup.get_by_id(self.ctxt, b2.id).parent_id)
        self.assertEqual((SRC[0], SRC[1], vol.name), (self.ours(b2).volume.cluster, self.ours(b2).volume.pool, self.ours(b2).volume.image))

    def latch(self, before, after, when):
        """A stand-in for the driver's status read: `before` until `when()` holds once, `after` from then on."""
        seen = []

        def status(backup):
            if not seen and when():
                seen.append(True)
            return after if seen else before

        self.mock_object(self.driver, "_status_now", status)
        return seen

    def running(self, kind, match):
        return [j for j in self.driver.client.list_jobs(kind=kind) if match(j) and j.state == pb.JOB_STATE_RUNNING]

    def ended(self, job):
        try:
            return self.driver.client.wait(job, timeout=60)
        except JobFailed as e:
            return e.job

    def test_a_copy_whose_backup_is_being_deleted_is_stopped_and_its_import_cancelled(self):
        # A force-delete (status deleting) seen while the import runs: the relay is killed, which ends its
        # call; rbdbackup cancels the import, and backup() returns nothing (the manager deletes).
        self.override_config("rbdbackup_status_check_interval", 0.05)
        vol = self.volume(image=False)
        f, _ = self.file_volume(vol, [(i * 16 * 1024 * 1024, 4 * 1024 * 1024) for i in range(64)])
        mine = lambda j: j.volume.image == vol.name  # noqa: E731
        seen = self.latch(fields.BackupStatus.CREATING, fields.BackupStatus.DELETING,
                          lambda: self.running(pb.JOB_KIND_IMPORT, mine))
        b = self.cinder_backup(vol)
        self.assertEqual({}, self.driver.backup(b, f))
        self.assertEqual([True], seen, "the import was seen running")
        made = self.driver.client.list_backups(volume_id=vol.id)
        self.assertEqual(1, len(made))
        (job,) = self.driver.client.list_jobs(backup_id=made[0].id)
        self.assertEqual(pb.JOB_STATE_CANCELLED, self.ended(job).state)
        self.assertNotEqual(pb.BACKUP_STATUS_AVAILABLE, self.driver.client.get_backup(made[0].id).status)

    def test_a_copy_restore_whose_backup_leaves_restoring_is_cancelled(self):
        vol = self.volume(image=False)
        f, _ = self.file_volume(vol, [(i * 16 * 1024 * 1024, 4 * 1024 * 1024) for i in range(64)])
        b = self.cinder_backup(vol)
        b.update(self.driver.backup(b, f))
        b.save()
        self.addCleanup(self.delete_quietly, b)
        rid = rbdbackup_id(b)
        self.override_config("rbdbackup_status_check_interval", 0.05)
        target, _ = self.file_volume(vol, [])
        # An admin's reset-state, once the restore's export runs.
        seen = self.latch(fields.BackupStatus.RESTORING, fields.BackupStatus.AVAILABLE,
                          lambda: self.running(pb.JOB_KIND_EXPORT, lambda j: j.backup_id == rid))
        self.assertRaises(exception.BackupRestoreCancel, self.driver.restore, b, vol.id, target)
        self.assertEqual([True], seen, "the export was seen running")
        (job,) = self.driver.client.list_jobs(kind=pb.JOB_KIND_EXPORT, backup_id=rid)
        self.assertEqual(pb.JOB_STATE_CANCELLED, self.ended(job).state, "its export cancelled, not carried to the end")

    def test_a_scoped_operator_copies_into_its_scopes_and_is_refused_outside_them(self):
        # The identity the README recommends: an operator token whose rbdbackup scopes cover its volumes, the
        # copies' pool and its backup pool (cinder.test.ts); ImportBackup is an operator's only so.
        self.override_config("rbdbackup_cert_file", None)
        self.override_config("rbdbackup_key_file", None)
        self.override_config("rbdbackup_token", CFG["scoped_token"])
        driver = RbdbackupBackupDriver(self.ctxt)
        vol = self.volume(image=False)
        f, want = self.file_volume(vol, [(0, 2 * 1024 * 1024)])
        b = self.cinder_backup(vol)
        b.update(driver.backup(b, f))
        b.save()
        self.addCleanup(self.delete_quietly, b)
        r = driver.client.get_backup(rbdbackup_id(b))
        self.assertEqual(pb.BACKUP_STATUS_AVAILABLE, r.status)
        self.assertEqual(want, LAB.export_sha256(BACKUPS, f"backups/{r.base_image}@{r.snapshot}"))
        # A copies' pool its scopes do not cover: refused, nothing made.
        self.override_config("rbdbackup_copied_volumes_pool", "someone-elses")
        vol2 = self.volume(image=False)
        f2, _ = self.file_volume(vol2, [(0, 1024 * 1024)])
        b2 = self.cinder_backup(vol2)
        e = self.assertRaises(exception.BackupOperationError, RbdbackupBackupDriver(self.ctxt).backup, b2, f2)
        self.assertIn("PERMISSION_DENIED", str(e))
        self.assertIn("someone-elses", str(e))
        self.assertEqual([], self.driver.client.list_backups(volume_id=vol2.id))

    def test_a_refused_copy_fails_clearly_and_leaves_no_backup(self):
        vol = self.volume(image=False)
        f, _ = self.file_volume(vol, [(0, 1024 * 1024)])
        b = self.cinder_backup(vol)
        self.override_config("rbdbackup_copied_volumes_pool", "bad/pool")
        e = self.assertRaises(exception.BackupOperationError, self.driver.backup, b, f)
        self.assertIn("INVALID_ARGUMENT", str(e))
        self.assertIn("header.volume", str(e))
        self.assertEqual([], self.driver.client.list_backups(volume_id=vol.id))


def sha256_of(f) -> str:
    h = hashlib.sha256()
    f.seek(0)
    for chunk in iter(lambda: f.read(4 * 1024 * 1024), b""):
        h.update(chunk)
    return h.hexdigest()


class BackupRecordedFirstTest(DriverTestCase):
    def test_a_backup_whose_follow_fails_is_still_found_and_deleted(self):
        # The job is made, then following it fails (a deadline, a lost watch): the rbdbackup id is in the
        # Cinder backup already, so delete_backup removes what the job made instead of leaving it behind.
        vol = self.volume(writes=1)
        b = self.cinder_backup(vol)
        made = []

        def lost(job, what, cancel, stop_when=None):
            made.append(job)
            raise RbdbackupError(grpc.StatusCode.DEADLINE_EXCEEDED, "the watch was lost (injected)")

        self.driver._follow = lost
        self.assertRaises(exception.BackupDriverException, self.driver.backup, b, self.volume_file(vol))
        saved = objects.Backup.get_by_id(self.ctxt, b.id)
        self.assertEqual(made[0].backup_id, rbdbackup_id(saved))
        # The job itself ran on: once it ends, the backup manager's delete finds and deletes its backup.
        self.driver.client.wait(made[0], timeout=120)
        del self.driver._follow
        self.driver.delete_backup(saved)
        self.assertEqual(pb.BACKUP_STATUS_DELETED, self.driver.client.get_backup(made[0].backup_id).status)


    def test_a_backup_whose_create_answer_never_came_is_found_by_its_cinder_id_and_deleted(self):
        # CreateBackup made the job, but its answer was lost: the Cinder backup records no rbdbackup id.
        # delete_backup finds the backup by the Cinder id in its volume metadata: a job still running is
        # cancelled (nothing left), a finished one's backup is deleted.
        vol = self.volume(writes=1)
        b = self.cinder_backup(vol)
        real = self.driver.client.create_backup
        made = []

        def answer_lost(req):
            made.append(real(req))
            raise RbdbackupError(grpc.StatusCode.DEADLINE_EXCEEDED, "the answer was lost (injected)")

        self.driver.client.create_backup = answer_lost
        try:
            self.assertRaises(exception.BackupDriverException, self.driver.backup, b, self.volume_file(vol))
        finally:
            self.driver.client.create_backup = real
        saved = objects.Backup.get_by_id(self.ctxt, b.id)
        self.assertIsNone(rbdbackup_id(saved), "nothing recorded")
        self.driver.delete_backup(saved)
        left = self.driver.client.get_backup(made[0].backup_id)
        self.assertIn(left.status, (pb.BACKUP_STATUS_DELETED, pb.BACKUP_STATUS_FAILED), pb.BackupStatus.Name(left.status))


class GivingUpTest(DriverTestCase):
    def test_a_job_whose_watch_fails_for_any_reason_is_cancelled(self):
        # Not only at its deadline: Cinder gives up on the operation whatever ended the wait.
        vol = self.volume(writes=1)
        b = self.cinder_backup(vol)
        cancelled = []
        real_cancel = self.driver.client.cancel_job

        def refused(job, timeout=None, **kw):
            raise RbdbackupError(grpc.StatusCode.PERMISSION_DENIED, "the watch was refused (injected)")

        def cancel(job_id):
            cancelled.append(job_id)
            return real_cancel(job_id)

        self.driver.client.wait = refused
        self.driver.client.cancel_job = cancel
        try:
            self.assertRaises(exception.BackupOperationError, self.driver.backup, b, self.volume_file(vol))
        finally:
            del self.driver.client.wait
            del self.driver.client.cancel_job
        saved = objects.Backup.get_by_id(self.ctxt, b.id)
        job_id = self.driver.client.get_backup(rbdbackup_id(saved)).job_id
        self.assertEqual([job_id], cancelled)
        self.driver.delete_backup(saved)

    def test_a_job_that_ends_while_its_watch_is_lost_is_judged_by_how_it_ended(self):
        # The watch is lost (a) just as the job succeeds: CancelJob refuses a finished job
        # (FAILED_PRECONDITION), and the job's own end says the backup was made; (b) while it runs, and
        # the cancel fails too: the job is still waited for, and its success is the backup made. Before,
        # both failed a backup rbdbackup had made.
        vol = self.volume(writes=3)
        real_wait = self.driver.client.wait
        refused = []

        def cancel_unreachable(job_id):
            refused.append(job_id)
            raise RbdbackupError(grpc.StatusCode.UNAVAILABLE, "no coordinator answered (injected)")

        for case in ("ended", "cancel failed"):
            calls = []

            def lost(job, timeout, **kw):
                calls.append(job.id)
                if len(calls) == 1:  # the backup's own follow
                    if case == "ended":
                        real_wait(job, timeout=120, raise_on_failure=False)
                    raise RbdbackupError(grpc.StatusCode.UNAVAILABLE, "the watch was lost (injected)")
                return real_wait(job, timeout, **kw)

            self.driver.client.wait = lost
            if case == "cancel failed":
                self.driver.client.cancel_job = cancel_unreachable
            b = self.cinder_backup(vol)
            self.addCleanup(self.delete_quietly, b)  # its id is recorded before the follow: deleted however it ends
            try:
                b.update(self.driver.backup(b, self.volume_file(vol)))
                b.save()
            finally:
                del self.driver.client.wait
                if case == "cancel failed":
                    del self.driver.client.cancel_job
            r = self.ours(b)
            self.assertEqual(pb.BACKUP_STATUS_AVAILABLE, r.status, case)
            self.assertEqual({"rbdbackup_id": r.id, "base": r.base_image}, json.loads(b.service_metadata), case)
            self.assertEqual(2, len(calls), f"{case}: the job was waited for after the cancel")
            self.assertEqual(pb.JOB_STATE_SUCCEEDED, self.driver.client.get_job(r.job_id).state, case)
        self.assertEqual(1, len(refused))

    def test_restores_of_this_host_cinder_gave_up_on_are_cancelled_after_setup_others_not(self):
        from rbdbackup_cinder import driver as drv
        from rbdbackup_cinder.driver import _restore_key, _restore_key_prefix

        vol = self.volume(writes=400)  # ~50 MiB: a restore that takes a moment
        b = self.do_backup(vol)
        rid = rbdbackup_id(b)
        # [0]: left running by this host before it restarted — Cinder's cleanup marked its volume
        # error_restoring; [1]: another host's; [2]: another backup worker's of this host, still running;
        # [3]: another worker's into a volume made from the backup ('creating').
        statuses = ("error_restoring", "restoring-backup", "restoring-backup", "creating")
        targets = [self.volume(writes=0, status=s) for s in statuses]
        files = [self.volume_file(t) for t in targets]

        def restore(i, key):
            req = pb.RestoreBackupRequest(
                backup_id=rid, target=self.driver.locator.volume_ref(targets[i], files[i]),
                mode=agent_pb2.RESTORE_MODE_ORIGINAL, allow_open=True, idempotency_key=key)
            return self.driver.client.restore_backup(req)

        # Another host's is named as this one with "-2": its keys start like ours. This host's are made
        # last, so that they still run when the sweep lists the jobs.
        other = restore(1, f"{_restore_key_prefix()[:-1]}-2-{b.id}-{uuid.uuid4().hex[:12]}")
        sibling = restore(2, _restore_key(b.id))
        created = restore(3, _restore_key(b.id))
        mine = restore(0, _restore_key(b.id))

        # The setup check only schedules the sweep, a minute on (after Cinder's own cleanup), once.
        scheduled = []
        self.mock_object(drv, "_later", lambda delay, fn: scheduled.append((delay, fn)))
        self.driver.check_for_setup_error()
        self.driver.check_for_setup_error()
        self.assertEqual([drv.LEFTOVER_SWEEP_DELAY_S], [d for d, _ in scheduled])

        cancelled = []
        real_cancel = self.driver.client.cancel_job

        def cancel(job_id):
            cancelled.append(job_id)
            return real_cancel(job_id)

        self.driver.client.cancel_job = cancel
        try:
            scheduled[0][1]()
        finally:
            del self.driver.client.cancel_job
        self.assertEqual(
            [drv.LEFTOVER_SWEEP_DELAY_S, drv.LEFTOVER_SWEEP_INTERVAL_S],
            [d for d, _ in scheduled],
            "the next sweep in ten minutes",
        )
        ended = self.driver.client.wait(mine, timeout=120, raise_on_failure=False)
        theirs = self.driver.client.wait(other, timeout=120, raise_on_failure=False)
        siblings = self.driver.client.wait(sibling, timeout=120, raise_on_failure=False)
        creating = self.driver.client.wait(created, timeout=120, raise_on_failure=False)
        self.assertNotIn(other.id, cancelled, "another host's restore is left alone")
        self.assertNotIn(sibling.id, cancelled, "a restore whose volume Cinder has restoring is left alone")
        self.assertNotIn(created.id, cancelled, "a volume made from the backup, still creating, too")
        self.assertEqual(pb.JOB_STATE_SUCCEEDED, theirs.state)
        self.assertEqual(pb.JOB_STATE_SUCCEEDED, siblings.state)
        self.assertEqual(pb.JOB_STATE_SUCCEEDED, creating.state)
        # Cancelled — unless it had ended before the sweep listed it (a small restore is quick).
        if mine.id in cancelled:
            self.assertIn(ended.state, (pb.JOB_STATE_CANCELLED, pb.JOB_STATE_SUCCEEDED))
        else:
            self.assertEqual(pb.JOB_STATE_SUCCEEDED, ended.state)
        print(f"leftover restore: cancel asked {mine.id in cancelled}, ended {pb.JobState.Name(ended.state)}")

    def test_the_leftover_sweep_is_tried_again_a_minute_on_while_no_coordinator_answers_then_every_ten(self):
        from rbdbackup_cinder import driver as drv

        scheduled = []
        self.mock_object(drv, "_later", lambda delay, fn: scheduled.append((delay, fn)))

        def unreachable(**_):
            raise RbdbackupError(grpc.StatusCode.UNAVAILABLE, "down", "127.0.0.1:1", "ListJobs")

        self.driver.client.list_jobs = unreachable
        try:
            self.driver._sweep_leftover_restores_later()
            for _ in range(3):
                scheduled[-1][1]()
        finally:
            del self.driver.client.list_jobs
        self.assertEqual([drv.LEFTOVER_SWEEP_DELAY_S] * 4, [d for d, _ in scheduled])
        scheduled[-1][1]()  # the coordinator back
        self.assertEqual(drv.LEFTOVER_SWEEP_INTERVAL_S, scheduled[-1][0])

    def test_a_volume_counts_as_restoring_while_restoring_backup_or_creating(self):
        # Cinder's cleanup leaves a volume made from a backup 'creating', and that backup's status cannot
        # tell whether another worker still restores into it: left alone, as Cinder leaves it.
        job = pb.Job(id="j", volume=common_pb2.VolumeRef(image="volume-x"))
        self.assertTrue(self.driver._restoring(job, {"volume-x": "creating"}))
        self.assertTrue(self.driver._restoring(job, {"volume-x": "restoring-backup"}))
        self.assertFalse(self.driver._restoring(job, {"volume-x": "error_restoring"}))
        self.assertFalse(self.driver._restoring(job, {}))

    def test_a_restore_whose_backup_leaves_restoring_is_cancelled(self):
        # Cinder cancels a restore by moving its backup out of 'restoring' (reset-state): the driver
        # reads the status while the job runs, cancels the job and raises BackupRestoreCancel.
        self.override_config("rbdbackup_status_check_interval", 0.05)
        vol = self.volume(writes=400)  # ~50 MiB: a restore that takes a moment
        b = self.do_backup(vol)
        target = self.volume(writes=0)
        jobs, checks = [], []
        real_restore, real_status = self.driver.client.restore_backup, self.driver._status_now

        def restore_backup(req):
            jobs.append(real_restore(req))
            return jobs[-1]

        def status_now(backup):
            checks.append(1)
            if len(checks) == 2:  # the admin's reset-state, after the first window of the watch
                self.set_status(backup, fields.BackupStatus.AVAILABLE)
            return real_status(backup)

        self.driver.client.restore_backup = restore_backup
        self.driver._status_now = status_now
        try:
            self.assertRaises(exception.BackupRestoreCancel, self.restore, b, target.id, self.volume_file(target))
        finally:
            del self.driver.client.restore_backup
            del self.driver._status_now
        self.assertEqual(2, len(checks), "stopped at the check that saw the new status")
        ended = self.driver.client.wait(jobs[0], timeout=120, raise_on_failure=False)
        self.assertEqual(pb.JOB_STATE_CANCELLED, ended.state, ended.error_message)

    def test_two_volumes_made_from_one_backup_at_once_both_restore(self):
        # Cinder's create-volume-from-backup twice at once. rbdbackup runs both restores side by side (they
        # share the backup); when the other one ends, Cinder's manager sets the backup available, and this
        # one must not take that for a reset-state (before, it was cancelled and its volume left in error).
        # The other restore is started beside this one's job and its manager's status write made at this
        # one's next check after it ended: one green thread, as Cinder's test fixtures need.
        self.override_config("rbdbackup_status_check_interval", 0.05)
        vol = self.volume(writes=400)
        b = self.do_backup(vol)
        sha = LAB.export_sha256("site-a", f"rbd/{vol.name}@{self.ours(b).snapshot}")
        slow, fast = self.volume(writes=0), self.volume(writes=0)
        jobs = {}
        real_restore, real_status = self.driver.client.restore_backup, self.driver._status_now
        from rbdbackup_cinder.driver import _restore_key

        def restore_backup(req):
            other = pb.RestoreBackupRequest()
            other.CopyFrom(req)
            other.target.image = fast.name
            other.idempotency_key = _restore_key(b.id)
            req.transfer.bandwidth_limit_bytes_per_second = 8 << 20  # still writing when the other ends
            jobs["slow"] = real_restore(req)
            jobs["fast"] = real_restore(other)
            return jobs["slow"]

        seen = {}

        def status_now(backup):
            if "fast" in jobs and "ended" not in seen:
                fast_job = self.driver.client.get_job(jobs["fast"].id)
                if fast_job.state == pb.JOB_STATE_SUCCEEDED:  # the other restore's manager: available again
                    seen["ended"] = pb.JobState.Name(self.driver.client.get_job(jobs["slow"].id).state)
                    self.set_status(backup, fields.BackupStatus.AVAILABLE)
            return real_status(backup)

        self.driver.client.restore_backup = restore_backup
        self.driver._status_now = status_now
        try:
            self.restore(b, slow.id, self.volume_file(slow))
        finally:
            del self.driver.client.restore_backup
            del self.driver._status_now
        self.assertEqual("JOB_STATE_RUNNING", seen.get("ended"), "this restore ran on after the other ended")
        self.assertEqual(pb.JOB_STATE_SUCCEEDED, self.driver.client.get_job(jobs["slow"].id).state)
        for v in (slow, fast):
            self.assertEqual(sha, LAB.export_sha256("site-a", f"rbd/{v.name}"), v.name)

    def test_a_backup_deleted_while_it_is_made_is_aborted_not_failed(self):
        # `backup delete --force` of a backup being made (the driver supports it): the API sets it
        # 'deleting' and the manager's delete_backup runs beside backup() — it cancels the job. backup()
        # then sees its job CANCELLED and returns without a result (Cinder logs "aborted"), not an error.
        self.assertTrue(self.driver.support_force_delete)
        self.override_config("rbdbackup_status_check_interval", 0.05)
        vol = self.volume(writes=400)
        b = self.cinder_backup(vol)
        real_status = self.driver._status_now
        deleted = []

        def status_now(backup):
            if not deleted:  # the force-delete arrives now; this read of the status came just before it
                deleted.append(1)
                self.driver.delete_backup(self.set_status(backup, fields.BackupStatus.DELETING))  # the
                # manager's delete: cancels the job, waits for its end
                return fields.BackupStatus.CREATING
            return real_status(backup)

        self.driver._status_now = status_now
        try:
            self.assertEqual({}, self.driver.backup(b, self.volume_file(vol)))
        finally:
            del self.driver._status_now
        rid = rbdbackup_id(objects.Backup.get_by_id(self.ctxt, b.id))
        made = self.driver.client.get_backup(rid)
        # Cancelled (FAILED), then deleted by the same delete_backup: a failed backup's leftovers are removed.
        self.assertEqual(pb.BACKUP_STATUS_DELETED, made.status, pb.BackupStatus.Name(made.status))
        self.assertEqual(pb.JOB_STATE_CANCELLED, self.driver.client.get_job(made.job_id).state)
        self.assertFalse(LAB.exists(BACKUPS, "backups", made.base_image), "nothing left in the backup pool")

    def test_a_backup_seen_deleting_at_a_status_check_has_its_job_cancelled(self):
        # The same, when the status check sees 'deleting' before the delete's cancel lands: the driver
        # cancels the job itself and returns, as Cinder's chunked drivers stop.
        vol = self.volume(writes=400)
        b = self.cinder_backup(vol)
        b.status = fields.BackupStatus.DELETING
        b.save()
        self.assertEqual({}, self.driver.backup(b, self.volume_file(vol)))
        rid = rbdbackup_id(objects.Backup.get_by_id(self.ctxt, b.id))
        made = self.driver.client.get_backup(rid)
        ended = self.driver.client.wait(self.driver.client.get_job(made.job_id), timeout=120, raise_on_failure=False)
        self.assertEqual(pb.JOB_STATE_CANCELLED, ended.state, ended.error_message)
        self.assertEqual(pb.BACKUP_STATUS_FAILED, self.driver.client.get_backup(rid).status)
        self.assertFalse(LAB.exists(BACKUPS, "backups", made.base_image), "nothing left in the backup pool")
        # The manager's delete_backup of the force-delete: nothing left to delete, and no error; the failed
        # backup is deleted (a DELETE job that finds nothing on the destination succeeds).
        self.driver.delete_backup(objects.Backup.get_by_id(self.ctxt, b.id))
        self.assertEqual(pb.BACKUP_STATUS_DELETED, self.driver.client.get_backup(rid).status)

    def test_a_backup_already_being_deleted_is_followed_not_deleted_again(self):
        vol = self.volume(writes=2)
        b = self.do_backup(vol)
        rid = rbdbackup_id(b)
        # A delete this host started before it restarted: Cinder asks for the delete again.
        self.driver.client.delete_backup(rid, idempotency_key=f"left-{uuid.uuid4().hex[:8]}")
        self.driver.delete_backup(b)
        self.assertEqual(pb.BACKUP_STATUS_DELETED, self.driver.client.get_backup(rid).status)

    def test_a_delete_while_a_restore_of_the_backup_runs_waits_for_it_then_deletes(self):
        # Cinder lets a backup be deleted while a restore of it still runs (a sibling restore it set the
        # backup available beside, or one left running across a restart): rbdbackup refuses that delete
        # while the restore holds the backup; the driver waits for the restore, then deletes (before, the
        # refusal made a good backup 'error').
        vol = self.volume(writes=200)
        b = self.do_backup(vol)
        rid = rbdbackup_id(b)
        target = self.volume(writes=0)
        req = pb.RestoreBackupRequest(
            backup_id=rid, target=self.driver.locator.volume_ref(target, self.volume_file(target)),
            mode=agent_pb2.RESTORE_MODE_ORIGINAL, allow_open=True, idempotency_key=f"t-{uuid.uuid4().hex[:12]}")
        req.transfer.bandwidth_limit_bytes_per_second = 8 << 20  # still running when the delete comes
        restore = self.driver.client.restore_backup(req)
        refused = self.assertRaises(RbdbackupError, self.driver.client.delete_backup, rid,
                                    idempotency_key=f"probe-{uuid.uuid4().hex[:8]}")
        self.assertEqual("FAILED_PRECONDITION", refused.code.name, "the restore holds the backup")
        self.driver.delete_backup(b)
        self.assertEqual(pb.JOB_STATE_SUCCEEDED, self.driver.client.get_job(restore.id).state, "the restore ran on")
        self.assertEqual(pb.BACKUP_STATUS_DELETED, self.driver.client.get_backup(rid).status)

    def test_the_record_of_a_deleted_backup_is_not_imported(self):
        vol = self.volume(writes=1)
        b = self.do_backup(vol)
        info = self.driver.export_record(b)
        self.driver.delete_backup(b)
        again = self.cinder_backup(vol)
        e = self.assertRaises(exception.InvalidBackup, self.driver.import_record, again, info)
        self.assertIn("BACKUP_STATUS_DELETED", str(e))


class SetupAndOptionsTest(DriverTestCase):
    def test_drivers_share_one_client(self):
        # Cinder makes a driver per operation and never closes it: one client (its channels) per process.
        a = RbdbackupBackupDriver(self.ctxt)
        b = RbdbackupBackupDriver(self.ctxt)
        self.assertIs(a.client, b.client)
        a.client.close()  # as a test's cleanup does: the next call reopens its channel
        b.check_for_setup_error()

    def test_a_renewed_certificate_file_gets_a_new_client(self):
        # A client reads its TLS files once: after one changes on disk, the next driver reads them again.
        a = RbdbackupBackupDriver(self.ctxt)
        first = a.client
        a.check_for_setup_error()  # `first` has a channel now
        st = os.stat(CFG["cert"])
        os.utime(CFG["cert"], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        self.addCleanup(os.utime, CFG["cert"], ns=(st.st_atime_ns, st.st_mtime_ns))
        b = RbdbackupBackupDriver(self.ctxt)
        self.assertIsNot(first, b.client)
        # Not closed: a backup or restore it follows would end CANCELLED ("Channel closed!").
        self.assertTrue(bool(first._channels), "the replaced client keeps its channels")
        b.check_for_setup_error()
        self.assertIs(b.client, RbdbackupBackupDriver(self.ctxt).client, "the same files: the same client")

    def test_check_for_setup_error(self):
        self.driver.check_for_setup_error()
        self.override_config("rbdbackup_backup_pool", "no-such-pool")
        e = self.assertRaises(exception.BackupDriverException, self.driver.check_for_setup_error)
        self.assertIn("no-such-pool", str(e))
        self.override_config("rbdbackup_backup_cluster", None)
        self.assertRaises(exception.InvalidConfigurationValue, self.driver.check_for_setup_error)

    def test_a_token_over_plaintext_is_refused(self):
        # rbdbackup_insecure sends every call in cleartext: a token with it would be readable on the way.
        self.override_config("rbdbackup_insecure", True)
        self.override_config("rbdbackup_token", "s3cret-token")
        driver = RbdbackupBackupDriver(self.ctxt)
        e = self.assertRaises(exception.BackupDriverException, driver.check_for_setup_error)
        self.assertIn("rbdbackup_insecure (plaintext gRPC) would send rbdbackup_token in cleartext", str(e))
        self.assertNotIn("s3cret-token", str(e))
        vol = self.volume(image=False)
        self.assertRaises(exception.BackupDriverException, driver.backup, self.cinder_backup(vol),
                          type("RBDWrapper", (), {"rbd_image": None, "rbd_pool": SRC[1]})())

    def test_check_for_setup_error_names_a_volume_cluster_the_coordinator_does_not_know(self):
        # Logged as an error (its agents may not have registered yet: not a failed setup); a malformed name fails it.
        self.override_config("rbdbackup_cluster_map", {"ceph-a": "site-a", "ceph-typo": "site-aa"})
        self.override_config("rbdbackup_default_volume_cluster", "nowhere")
        self.driver.check_for_setup_error()
        logged = self.driver._check_volume_clusters()
        self.assertEqual(2, len(logged), logged)
        self.assertIn("rbdbackup_cluster_map[ceph-typo] = site-aa: the rbdbackup coordinator does not know this cluster",
                      logged[0])
        self.assertIn("rbdbackup_default_volume_cluster = nowhere", logged[1])
        self.override_config("rbdbackup_cluster_map", {"ceph-a": "site-a", "bad": "not a name!"})
        e = self.assertRaises(exception.InvalidConfigurationValue, self.driver.check_for_setup_error)
        self.assertIn("not a name!", str(e))
        self.override_config("rbdbackup_cluster_map", {"ceph-a": "site-a"})
        self.override_config("rbdbackup_default_volume_cluster", "site-a")
        self.assertEqual([], self.driver._check_volume_clusters())

    def test_get_driver_options(self):
        names = {o.name for o in RbdbackupBackupDriver.get_driver_options()}
        self.assertLessEqual(
            {"rbdbackup_coordinators", "rbdbackup_backup_cluster", "rbdbackup_backup_pool", "rbdbackup_cluster_map",
             "rbdbackup_token", "rbdbackup_job_timeout"},
            names,
        )
        token = next(o for o in RbdbackupBackupDriver.get_driver_options() if o.name == "rbdbackup_token")
        self.assertTrue(token.secret)


class RecordTest(DriverTestCase):
    def test_export_then_import_into_a_second_coordinator_then_restore(self):
        vol = self.volume(metadata={"tier": "gold"})
        b = self.do_backup(vol)
        r = self.ours(b)
        sha = LAB.export_sha256("site-a", f"rbd/{vol.name}@{r.snapshot}")
        info = self.driver.export_record(b)
        self.assertEqual(r.id, info["rbdbackup_record"]["backup"]["id"])
        json.dumps(info)  # Cinder serializes it into the backup URL

        # The second site: its own coordinator (bearer token, CA only) and Cinder's imported backup row.
        client2 = Client(ClientConfig(addresses=[CFG["coordinator2"]], ca_file=CFG["ca"], token=CFG["token2"],
                                      backoff_base=0.1))
        self.addCleanup(client2.close)
        driver2 = RbdbackupBackupDriver(self.ctxt, client=client2)
        imported = self.cinder_backup(vol)
        driver2.import_record(imported, info)
        self.assertEqual(r.id, rbdbackup_id(objects.Backup.get_by_id(self.ctxt, imported.id)))
        driver2.import_record(imported, info)  # again: already known there, fine
        # The same id with another volume (or place): not the backup the record describes, refused.
        forged = json.loads(json.dumps(info))
        forged["rbdbackup_record"]["backup"]["volume"]["image"] = "someone-else"
        e = self.assertRaises(exception.InvalidBackup, driver2.import_record, self.cinder_backup(vol), forged)
        self.assertIn("differs from the record (volume ", str(e))
        self.assertIn("/someone-else, here ", str(e))
        # A record exported by a newer rbdbackup (fields this one does not know) still imports.
        newer = json.loads(json.dumps(info))
        newer["rbdbackup_record"]["a_field_of_a_newer_release"] = {"x": 1}
        newer["rbdbackup_record"]["backup"]["another_new_field"] = "y"
        driver2.import_record(imported, newer)
        self.assertEqual(pb.BACKUP_STATUS_AVAILABLE, client2.get_backup(r.id).status)

        target = self.volume(where=DST, writes=3)
        self.restore(imported, target.id, self.volume_file(target, where=DST), driver=driver2)
        self.assertEqual(sha, LAB.export_sha256(DST[0], f"rbd/{target.name}"))
        self.assertEqual({"tier": "gold"}, db.volume_metadata_get(self.ctxt, target.id))

        bad = self.cinder_backup(vol)
        self.assertRaises(exception.InvalidBackup, driver2.import_record, bad, {"other": 1})
        self.assertRaises(exception.InvalidBackup, driver2.import_record, bad, {"rbdbackup_record": {"nope": 1}})

    def test_a_record_whose_data_is_gone_is_invalid_for_a_coordinator_that_never_knew_it(self):
        # As a record of a backup deleted longer ago than catalog.historyDays is, everywhere.
        vol = self.volume(writes=1)
        b = self.do_backup(vol)
        info = self.driver.export_record(b)
        self.driver.delete_backup(b)
        client2 = Client(ClientConfig(addresses=[CFG["coordinator2"]], ca_file=CFG["ca"], token=CFG["token2"],
                                      backoff_base=0.1))
        self.addCleanup(client2.close)
        driver2 = RbdbackupBackupDriver(self.ctxt, client=client2)
        self.assertRaises(exception.InvalidBackup, driver2.import_record, self.cinder_backup(vol), info)
        self.assertRaises(RbdbackupError, client2.get_backup, info["rbdbackup_record"]["backup"]["id"])


class RestoreKeyTest(test.TestCase):
    def test_a_host_that_cannot_stand_in_a_key_is_hashed_and_its_keys_are_still_its_own(self):
        from rbdbackup_cinder.driver import _host_tag, _is_my_restore_key, _restore_key

        self.assertEqual("node-1.example:x", _host_tag("node-1.example:x"), "a host that fits is kept as it is")
        for host in ("node@ceph", "n" * 64):
            self.override_config("host", host)
            self.assertRegex(_host_tag(host), r"^h-[0-9a-f]{16}$")
            key = _restore_key(str(uuid.uuid4()))
            # What the coordinator accepts as an idempotency key (src/coordinator/validate.ts).
            self.assertRegex(key, r"^[A-Za-z0-9._:-]{1,128}$")
            self.assertTrue(_is_my_restore_key(key))
            self.override_config("host", host + "2")
            self.assertFalse(_is_my_restore_key(key), "another host's")

    def test_a_status_write_is_excused_once_by_a_sibling_restore_that_ended_not_by_a_cancelled_one(self):
        import datetime
        import types

        from google.protobuf import timestamp_pb2
        from rbdbackup_cinder.driver import RbdbackupBackupDriver

        t0 = datetime.datetime(2026, 12, 1, 12, 0, 0)

        def ts(seconds):
            t = timestamp_pb2.Timestamp()
            t.FromDatetime(t0 + datetime.timedelta(seconds=seconds))
            return t

        def job(jid, state, created, finished=None, key="cinder-restore-h-0123456789abcdef-x", kind=pb.JOB_KIND_RESTORE):
            j = pb.Job(id=jid, kind=kind, state=state, idempotency_key=key, created_at=ts(created))
            if finished is not None:
                j.finished_at.CopyFrom(ts(finished))
            return j

        class Fake:
            status = fields.BackupStatus.RESTORING
            updated = None
            jobs = []

            def _status_now(self, backup):
                backup.updated_at = self.updated
                return self.status

        fake = Fake()
        fake.client = types.SimpleNamespace(list_jobs=lambda **kw: [j for j in fake.jobs if j.kind == kw["kind"]])
        backup = types.SimpleNamespace(id="b", updated_at=None)
        mine = job("mine", pb.JOB_STATE_RUNNING, 0)

        def cancelled(excused):
            return RbdbackupBackupDriver._restore_cancelled(fake, backup, "rid", mine, excused)

        excused = {}
        self.assertFalse(cancelled(excused), "restoring")
        # Another restore of the backup ended at +100; the manager wrote 'available' at +102.
        fake.jobs = [mine, job("other", pb.JOB_STATE_SUCCEEDED, 5, 100)]
        fake.status, fake.updated = fields.BackupStatus.AVAILABLE, t0 + datetime.timedelta(seconds=102)
        self.assertFalse(cancelled(excused), "the other restore's end")
        self.assertFalse(cancelled(excused), "the same write, read again")
        fake.updated = t0 + datetime.timedelta(seconds=130)  # an admin's reset-state, 30 s later
        self.assertTrue(cancelled(excused), "a second write: the other restore excused one")
        # A cancelled sibling (the reset-state cancelled it first) excuses nothing.
        fake.jobs = [mine, job("other", pb.JOB_STATE_CANCELLED, 5, 104)]
        fake.updated = t0 + datetime.timedelta(seconds=106)
        self.assertTrue(cancelled({}))
        # One that ended before this restore began, or another service's restore, neither.
        fake.jobs = [mine, job("old", pb.JOB_STATE_SUCCEEDED, -50, -10), job("x", pb.JOB_STATE_SUCCEEDED, 5, 100, key="k")]
        fake.updated = t0 + datetime.timedelta(seconds=102)
        self.assertTrue(cancelled({}))
        # A restore onto a target that is not RBD is an EXPORT job of the backup (no key): its end excuses one.
        fake.jobs = [mine, job("copy", pb.JOB_STATE_SUCCEEDED, 5, 100, key="", kind=pb.JOB_KIND_EXPORT)]
        self.assertFalse(cancelled({}))

