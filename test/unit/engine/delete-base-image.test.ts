/**
 * The agent's DeleteBackup removes a base image once no backup snapshot is left on it, so it acts only
 * on a base image name (<volume>.backup.<backup uuid>): a request naming a live volume as the base image
 * is INVALID_ARGUMENT before the cluster is touched. A delete that fails after removing the snapshot says
 * what it removed (DeleteIncomplete, UNAVAILABLE: retried), and its retry removes what is left. Fakes: a
 * cluster that fails the test if used; a pool of images and objects in memory.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { constants } from "node:os";
import { describe, it } from "node:test";
import { Status } from "nice-grpc-common";
import { CephError } from "../../../agents/ceph/errors";
import type { EngineContext } from "../../../agents/engine/context";
import { DeleteIncomplete, deleteBackup } from "../../../agents/engine/delete";
import { backupSnapName, metaObjectName } from "../../../src/common/ids";
import { DeleteBackupDataRequest } from "../../../src/gen/rbdbackup/v1/agent";
import { memoryLogger } from "../coordinator/harness";

describe("agent DeleteBackup: only a base image", () => {
  it("a volume named as the base image: INVALID_ARGUMENT, the cluster untouched", async () => {
    const untouched = new Proxy({}, { get: (_t, k) => assert.fail(`the cluster was used (${String(k)})`) });
    const ctx = { cluster: untouched, log: untouched } as unknown as EngineContext;
    const id = randomUUID();
    for (const baseImage of ["prod-volume", `prod.backup.${id}x`, "prod.backup.not-a-uuid"]) {
      await assert.rejects(
        deleteBackup(ctx, DeleteBackupDataRequest.fromPartial({ backupId: id, pool: "backups", baseImage })),
        (e: unknown) =>
          (e as { status?: Status }).status === Status.INVALID_ARGUMENT &&
          /is not a base image name/.test((e as Error).message),
        baseImage,
      );
    }
  });
});

/** A pool in memory: images with their snapshots, objects; `removeFails` makes imageRemove fail so. */
function fakePool() {
  const images = new Map<string, string[]>();
  const objects = new Set<string>();
  const pool = {
    images,
    objects,
    removeFails: null as CephError | null,
    io: {
      label: "backups",
      imageList: async () => [...images.keys()],
      async imageOpen(name: string) {
        const snaps = images.get(name);
        if (!snaps) throw new CephError(constants.errno.ENOENT, "rbd_open", name, "no such image");
        return {
          snapList: async () => snaps.map((n) => ({ name: n, size: 1 << 20, protected: false })),
          listChildren: async () => [],
          snapRemove: async (n: string) => {
            snaps.splice(snaps.indexOf(n), 1);
          },
          snapUnprotect: async () => {},
          close: async () => {},
        };
      },
      async imageRemove(name: string) {
        if (pool.removeFails) throw pool.removeFails;
        if (!images.delete(name)) throw new CephError(constants.errno.ENOENT, "rbd_remove", name, "no such image");
      },
      async objRemove(oid: string) {
        if (!objects.delete(oid)) throw new CephError(constants.errno.ENOENT, "rados_remove", oid, "no such object");
      },
      close: async () => {},
    },
  };
  return pool;
}

describe("agent DeleteBackup: a failure after the snapshot is gone", () => {
  it("is a DeleteIncomplete naming the removed snapshot (UNAVAILABLE); the retry removes the base image and metadata", async () => {
    const p = fakePool();
    const id = randomUUID();
    const base = `vol.backup.${id}`;
    const snap = backupSnapName(id);
    p.images.set(base, [snap]);
    p.objects.add(metaObjectName(id));
    p.removeFails = new CephError(constants.errno.EIO, "rbd_remove", base, "input/output error");
    const ctx = {
      cluster: { poolExists: async () => true, openIoCtx: async () => p.io },
      log: memoryLogger(),
    } as unknown as EngineContext;
    const req = DeleteBackupDataRequest.fromPartial({ backupId: id, pool: "backups", baseImage: base });
    const e = await deleteBackup(ctx, req).catch((x: unknown) => x);
    assert.ok(e instanceof DeleteIncomplete, String(e));
    assert.equal(e.status, Status.UNAVAILABLE);
    assert.equal(e.partial.removedSnapshot, snap);
    assert.equal(e.partial.removedBaseImage, false);
    assert.match(
      e.message,
      new RegExp(
        `snapshot ${snap.replace(/\./g, "\\.")} removed, but the rest of the delete failed .*input/output error`,
      ),
    );
    assert.deepEqual(p.images.get(base), [], "the snapshot is gone, the base image left");
    // The retry: the snapshot gone, the named base image empty — removed, and the metadata with it.
    p.removeFails = null;
    const r = await deleteBackup(ctx, req);
    assert.equal(r.removedBaseImage, true);
    assert.equal(r.removedMetadata, true);
    assert.equal(p.images.has(base), false);
    assert.equal(p.objects.size, 0);
  });

  it("a retry whose base image still holds other backups keeps it", async () => {
    const p = fakePool();
    const id = randomUUID();
    const base = `vol.backup.${randomUUID()}`;
    p.images.set(base, [backupSnapName(randomUUID())]);
    const ctx = {
      cluster: { poolExists: async () => true, openIoCtx: async () => p.io },
      log: memoryLogger(),
    } as unknown as EngineContext;
    const r = await deleteBackup(
      ctx,
      DeleteBackupDataRequest.fromPartial({ backupId: id, pool: "backups", baseImage: base }),
    );
    assert.equal(r.removedBaseImage, false);
    assert.equal(p.images.get(base)?.length, 1, "the chain's other backup is untouched");
  });
});
