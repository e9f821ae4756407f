"""The lab clusters as the Cinder driver tests see them: RBD images made and changed with python3-rbd
(Ceph's own bindings, as Cinder's volume driver uses them), os-brick's RBDVolumeIOWrapper around them
(what Cinder's backup manager hands a backup driver for an RBD volume), and sha256 of `rbd export`.

The test config (RBDBACKUP_CINDER_TEST_CONFIG, written by cinder.test.ts) names the coordinators, TLS
files and the lab directory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from typing import Dict, List

import rados
import rbd
from os_brick.initiator import linuxrbd

MiB = 1 << 20
GiB = 1 << 30


def test_config() -> dict:
    path = os.environ.get("RBDBACKUP_CINDER_TEST_CONFIG")
    if not path:
        raise RuntimeError("RBDBACKUP_CINDER_TEST_CONFIG is not set: run these tests through test/integration/openstack/cinder.test.ts")
    with open(path) as f:
        return json.load(f)


class Lab:
    def __init__(self, lab_dir: str):
        self.lab_dir = lab_dir
        self._rados: Dict[str, rados.Rados] = {}
        self._held: List[rados.Ioctx] = []

    def conf(self, cluster: str) -> str:
        return os.path.join(self.lab_dir, cluster, "ceph.conf")

    def ioctx(self, cluster: str, pool: str) -> rados.Ioctx:
        if cluster not in self._rados:
            r = rados.Rados(conffile=self.conf(cluster), rados_id="admin")
            r.connect(timeout=30)
            self._rados[cluster] = r
        return self._rados[cluster].open_ioctx(pool)

    def close(self) -> None:
        for io in self._held:
            io.close()
        self._held.clear()
        for r in self._rados.values():
            r.shutdown()
        self._rados.clear()

    def create(self, cluster: str, pool: str, name: str, size: int) -> None:
        with self.ioctx(cluster, pool) as io:
            rbd.RBD().create(io, name, size, old_format=False)

    def write_random(self, cluster: str, pool: str, name: str, writes: int, span: int = 64 * MiB,
                     max_write: int = 256 << 10) -> None:
        """`writes` random writes of up to max_write bytes at random offsets in the first `span` bytes."""
        with self.ioctx(cluster, pool) as io, rbd.Image(io, name) as img:
            span = min(img.size(), span)
            for _ in range(writes):
                n = 4096 + int.from_bytes(os.urandom(3), "big") % max_write
                off = int.from_bytes(os.urandom(4), "big") % (span - n)
                img.write(os.urandom(n), off)
            img.flush()

    def snaps(self, cluster: str, pool: str, name: str) -> List[str]:
        with self.ioctx(cluster, pool) as io, rbd.Image(io, name, read_only=True) as img:
            return [s["name"] for s in img.list_snaps()]

    def exists(self, cluster: str, pool: str, name: str) -> bool:
        with self.ioctx(cluster, pool) as io:
            return name in rbd.RBD().list(io)

    def size(self, cluster: str, pool: str, name: str) -> int:
        with self.ioctx(cluster, pool) as io, rbd.Image(io, name, read_only=True) as img:
            return img.size()

    def remove(self, cluster: str, pool: str, name: str) -> None:
        """Removes an image and its snapshots (what a test made); absent is fine. librbd may still hold a
        snapshot in its trash namespace for a moment (a removed backup snapshot): retried for 60 s."""
        deadline = time.monotonic() + 60
        with self.ioctx(cluster, pool) as io:
            while True:
                if name not in rbd.RBD().list(io):
                    return
                try:
                    with rbd.Image(io, name) as img:
                        for s in img.list_snaps():
                            if s.get("namespace", rbd.RBD_SNAP_NAMESPACE_TYPE_USER) == rbd.RBD_SNAP_NAMESPACE_TYPE_USER:
                                try:
                                    img.remove_snap(s["name"])
                                except rbd.ImageNotFound:
                                    pass  # removed meanwhile (the agent prunes its snapshots)
                    rbd.RBD().remove(io, name)
                    return
                except (rbd.ImageBusy, rbd.ImageHasSnapshots):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)

    def volume_file(self, cluster: str, pool: str, name: str) -> linuxrbd.RBDVolumeIOWrapper:
        """os-brick's wrapper of an open image, as Cinder hands it to a backup driver (close it)."""
        io = self.ioctx(cluster, pool)
        self._held.append(io)
        meta = linuxrbd.RBDImageMetadata(rbd.Image(io, name), pool, "admin", self.conf(cluster))
        return linuxrbd.RBDVolumeIOWrapper(meta)

    def export_sha256(self, cluster: str, spec: str, pad_zeros: int = 0) -> str:
        """sha256 of `rbd export <spec> -` followed by pad_zeros zero bytes (bounded: 300 s)."""
        h = hashlib.sha256()
        p = subprocess.Popen(["rbd", "-c", self.conf(cluster), "export", "--no-progress", spec, "-"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert p.stdout is not None
            for chunk in iter(lambda: p.stdout.read(4 * MiB), b""):
                h.update(chunk)
            err = p.stderr.read().decode() if p.stderr else ""
            if p.wait(timeout=300) != 0:
                raise RuntimeError(f"rbd export {spec} failed: {err.strip()}")
        finally:
            if p.poll() is None:
                p.kill()
        zeros = bytes(4 * MiB)
        while pad_zeros > 0:
            h.update(zeros[: min(pad_zeros, len(zeros))])
            pad_zeros -= len(zeros)
        return h.hexdigest()
