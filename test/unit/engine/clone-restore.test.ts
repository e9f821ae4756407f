/**
 * restoreClone (agents/engine/clone.ts) over an in-memory pool pair, no Ceph: the backup's image-meta
 * applied to the clone — a `conf_` override the cluster refuses (EINVAL) is a warning, not a failed
 * restore —, and a clone this attempt made, then failed to finish, is removed (it would outlive the job
 * untracked: Backup.clones lists only succeeded jobs' clones).
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { CephError } from "../../../agents/ceph";
import { restoreClone } from "../../../agents/engine/clone";
import type { EngineContext } from "../../../agents/engine/context";
import { metaObjectName } from "../../../src/common/ids";
import { RestoreMode, type RestoreRequest } from "../../../src/gen/rbdbackup/v1/agent";
import { quietLogger } from "../transfer/fakes/sink-deps";

const ID = randomUUID();
const BASE = `vol.backup.${ID}`;
const SNAP = `backup.${ID}.snap.1764640000`;

/** Two pools: "backups" holding the base image and its meta object, "rbd" where clones go. */
function world(metaSet: (image: string, k: string, v: string) => void) {
  const images = { backups: new Set([BASE]), rbd: new Set<string>() };
  const meta = new Map<string, Record<string, string>>();
  const removed: string[] = [];
  const enoent = (what: string) => new CephError(2, what, "fake", "No such file or directory");
  const ioOf = (pool: "backups" | "rbd") => ({
    label: pool,
    async imageOpen(name: string) {
      if (!images[pool].has(name)) throw enoent("rbd_open");
      return {
        snapList: async () => (name === BASE ? [{ name: SNAP, size: 1 << 20, protected: false }] : []),
        metaSet: async (k: string, v: string) => {
          metaSet(name, k, v);
          meta.set(name, { ...meta.get(name), [k]: v });
        },
        close: async () => {},
      };
    },
    async objRead(oid: string) {
      if (pool !== "backups" || oid !== metaObjectName(ID)) throw enoent("rados_read");
      return Buffer.from(
        JSON.stringify({
          version: 1,
          backup_id: ID,
          created_at: "2026-12-05T00:00:00Z",
          volume: { id: "vol-1", metadata: {} },
          source: { kind: "rbd", cluster_fsid: "", pool: "rbd", namespace: "", image: "vol", snapshot: SNAP },
          image: {
            size: 1 << 20,
            features: "0",
            order: 22,
            stripe_unit: 0,
            stripe_count: 0,
            image_meta: { "user.team": "storage", conf_no_such_option: "1" },
          },
          chain: { base_image: BASE, incremental: false, parent_snapshot: null, snapshot: SNAP },
        }),
      );
    },
    async imageClone(_base: string, _snap: string, _dest: unknown, name: string) {
      images.rbd.add(name);
    },
    async imageRemove(name: string) {
      images[pool].delete(name);
      removed.push(name);
    },
    async close() {},
  });
  const ctx = {
    fsid: "fsid-b",
    log: quietLogger(),
    cluster: {
      poolExists: async () => true,
      openIoCtx: async (pool: "backups" | "rbd") => ioOf(pool),
    },
  } as unknown as EngineContext;
  return { ctx, images, meta, removed };
}

const request = (target: string): RestoreRequest =>
  ({
    backupId: ID,
    backupPool: "backups",
    backupNamespace: "",
    baseImage: BASE,
    snapshot: SNAP,
    target: { pool: "rbd", namespace: "", image: target },
    mode: RestoreMode.RESTORE_MODE_CLONE,
    jobId: "job-1",
  }) as RestoreRequest;

describe("restoreClone", () => {
  it("a conf_ override the cluster refuses (EINVAL) is a warning; the other image-meta is set", async () => {
    const w = world((_image, k) => {
      if (k === "conf_no_such_option")
        throw new CephError(22, "rbd_metadata_set", "set image-meta", "Invalid argument");
    });
    const r = await restoreClone(w.ctx, request("clone-1"));
    assert.ok(w.images.rbd.has("clone-1"));
    assert.deepEqual(w.meta.get("clone-1"), { "user.team": "storage" });
    assert.match(r.warnings.join("\n"), /image-meta conf_no_such_option=1 not applied: this cluster refuses it/);
  });

  it("a clone this attempt made, then failed to finish, is removed; the error is the call's", async () => {
    const w = world((_image, k) => {
      if (k === "user.team") throw new CephError(5, "rbd_metadata_set", "set image-meta", "Input/output error");
    });
    await assert.rejects(restoreClone(w.ctx, request("clone-2")), /EIO|rbd_metadata_set/);
    assert.equal(w.images.rbd.has("clone-2"), false, "no clone left behind");
    assert.deepEqual(w.removed, ["clone-2"]);
  });
});
