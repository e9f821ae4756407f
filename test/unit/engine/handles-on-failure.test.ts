/**
 * Handles opened by the engine are closed when a later step fails, not left to garbage collection: an
 * image left open keeps its watch (a probe image then cannot be removed: EBUSY, and it stays in the
 * backup pool). Fakes record opens and closes; the step after the open throws. No Ceph.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Cluster } from "../../../agents/ceph";
import { clusterChecks } from "../../../agents/engine/checks";

/** A cluster whose image stat fails; it counts what is open and what was removed. */
function statFails() {
  const seen = { open: 0, removed: [] as string[], created: [] as string[] };
  const image = {
    stat: async () => {
      throw new Error("stat: connection reset");
    },
    close: async () => {
      seen.open--;
    },
  };
  const io = {
    imageCreate: async (name: string) => {
      seen.created.push(name);
    },
    imageOpen: async () => {
      seen.open++;
      return image;
    },
    imageRemove: async (name: string) => {
      if (seen.open > 0) throw new Error("EBUSY: the image is still open (its watch)");
      seen.removed.push(name);
    },
    close: async () => {},
  };
  const cluster = {
    fsid: () => "fsid-1",
    poolExists: async () => true,
    poolFullness: async () => ({ full: false, nearfull: false, clusterFull: false }),
    openIoCtx: async () => io,
  } as unknown as Cluster;
  return { cluster, seen };
}

describe("engine handles on failure", () => {
  it("the cluster check's probe image: closed when its stat fails, then removed; the check fails naming the error", async () => {
    const { cluster, seen } = statFails();
    const checks = await clusterChecks(cluster, "backups");
    const probe = checks.find((c) => c.name === "image-features");
    assert.equal(probe?.ok, false);
    assert.match(probe?.message ?? "", /stat: connection reset/);
    assert.equal(seen.open, 0, "the probe image was closed");
    assert.deepEqual(seen.removed, seen.created, "and the probe removed");
  });
});
