"""Where a Cinder volume lives in rbdbackup's terms: the cluster (by the volume's backend, through
rbdbackup_cluster_map), the pool (the RBD volume file's rbd_pool, as Ceph's driver reads it) and the
image (volume.name, e.g. volume-<id>). And the backup snapshot name pattern both drivers share."""

from __future__ import annotations

from typing import Optional

from cinder import exception
from cinder.i18n import _
from rbdbackup_client import common_pb2

# Same as CephBackupDriver.backup_snapshot_name_pattern(): rbdbackup names its snapshots this way.
SNAPSHOT_PATTERN = r"^backup\.([a-z0-9\-]+?)\.snap\.(.+)$"


def file_is_rbd(volume_file) -> bool:
    """True when Cinder handed an RBD volume (os-brick's RBDVolumeIOWrapper), as Ceph's driver checks."""
    return hasattr(volume_file, "rbd_image")


def backend_of(host: str) -> str:
    """'node@backend#pool' -> 'backend' ('' when the host names none)."""
    at = (host or "").partition("#")[0].partition("@")
    return at[2] if at[1] else ""


class VolumeLocator:
    def __init__(self, conf):
        self.conf = conf

    def backup_cluster(self) -> str:
        c = self.conf.rbdbackup_backup_cluster
        if not c:
            raise exception.InvalidConfigurationValue(option="rbdbackup_backup_cluster", value=c)
        return c

    def cluster_of(self, volume) -> str:
        backend = backend_of(volume["host"])
        cluster = (self.conf.rbdbackup_cluster_map or {}).get(backend) or self.conf.rbdbackup_default_volume_cluster
        if not cluster:
            raise exception.BackupDriverException(
                reason=_("no rbdbackup cluster for volume backend %(b)r (volume %(v)s): add it to "
                         "rbdbackup_cluster_map or set rbdbackup_default_volume_cluster")
                % {"b": backend, "v": volume["id"]}
            )
        return cluster

    def copied_volume_ref(self, volume, snapshot_id: Optional[str] = None) -> common_pb2.VolumeRef:
        """What rbdbackup lists a copied backup under: a volume that is not RBD by its name, a Cinder
        snapshot by its own (snapshot-<id>: a copy holds its volume in rbdbackup while it runs, and a
        volume's own backup may run beside its snapshot's), in rbdbackup_copied_volumes_pool — not
        under the RBD volume's own name, so that a copy never becomes the head of its RBD backups' chain."""
        image = f"snapshot-{snapshot_id}" if snapshot_id else volume["name"]
        return common_pb2.VolumeRef(cluster=self.backup_cluster(), pool=self.conf.rbdbackup_copied_volumes_pool, image=image)

    def volume_ref(self, volume, volume_file) -> common_pb2.VolumeRef:
        pool = getattr(volume_file, "rbd_pool", None)
        if not pool:
            raise exception.BackupDriverException(
                reason=_("the RBD volume file of volume %s names no pool") % volume["id"]
            )
        return common_pb2.VolumeRef(cluster=self.cluster_of(volume), pool=pool, image=volume["name"])
