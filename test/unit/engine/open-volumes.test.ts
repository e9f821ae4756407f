/**
 * OpenVolumes (agents/engine/open-volumes.ts): a volume a probe opened is held for the backup that
 * follows — taken once, closed when not taken in time, replaced by a newer probe's, bounded in number,
 * all closed at the agent's stop. And end to end against the fake cluster: a CreateBackup's probe
 * (keep_open) and the backup after it open the volume once between them; a probe without keep_open
 * keeps nothing.
 */
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";
import { AgentOperations } from "../../../agents/agent/operations";
import { backup } from "../../../agents/engine/backup";
import { OpenVolumes as Holder } from "../../../agents/engine/open-volumes";
import type { Logger } from "../../../src/common/log";
import { BackupMode, BackupRequest } from "../../../src/gen/rbdbackup/v1/agent";
import { waitFor } from "../../helpers/wait";
import { FakeBackupCluster, FakeImage } from "./fake-cluster";

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {}, child: () => quiet };

type Pair = ReturnType<typeof handle>;
/** A holder of fake handle pairs. */
class OpenVolumes extends Holder<Pair> {}

/** A handle pair whose closes are counted. */
function handle(closed: string[], name: string) {
  return {
    io: { close: async () => void closed.push(`${name} io`) },
    image: { close: async () => void closed.push(`${name} image`) },
  };
}

describe("OpenVolumes", () => {
  it("a held volume is taken once, then it is the taker's: nothing closed by the holder", async () => {
    const closed: string[] = [];
    const held = new OpenVolumes(60_000);
    const v = handle(closed, "a");
    held.put("k", v);
    assert.equal(held.take("k"), v);
    assert.equal(held.take("k"), null, "taken at most once");
    await held.close();
    assert.deepEqual(closed, []);
  });

  it("one not taken within the ttl is closed, image before its IoCtx", async () => {
    const closed: string[] = [];
    const held = new OpenVolumes(20);
    held.put("k", handle(closed, "a"));
    await waitFor(() => closed.length === 2, { what: "the expired handle closed", timeoutMs: 5000, intervalMs: 10 });
    assert.deepEqual(closed, ["a image", "a io"]);
    assert.equal(held.take("k"), null);
    assert.equal(held.size, 0);
  });

  it("a newer probe of the same volume replaces the held handle (closed); beyond max the oldest goes", async () => {
    const closed: string[] = [];
    const held = new OpenVolumes(60_000, 2);
    const newer = handle(closed, "new");
    held.put("k", handle(closed, "old"));
    held.put("k", newer);
    await waitFor(() => closed.length === 2, { what: "the replaced handle closed", timeoutMs: 5000, intervalMs: 10 });
    assert.deepEqual(closed, ["old image", "old io"]);
    held.put("j", handle(closed, "j"));
    held.put("i", handle(closed, "i")); // a third: "k" (the oldest) goes
    await waitFor(() => closed.length === 4, { what: "the oldest handle closed", timeoutMs: 5000, intervalMs: 10 });
    assert.deepEqual(closed.slice(2), ["new image", "new io"]);
    assert.equal(held.take("k"), null);
    await held.close(); // closes what is left and waits for every close
    assert.deepEqual(closed.slice(4).sort(), ["i image", "i io", "j image", "j io"]);
    assert.ok(closed.indexOf("i image") < closed.indexOf("i io"), "an image before its IoCtx");
    assert.equal(held.size, 0);
  });
});

describe("a CreateBackup's probe and its backup", () => {
  const request = () =>
    BackupRequest.fromPartial({
      backupId: randomUUID(),
      source: { $case: "volume", value: { pool: "rbd", namespace: "", image: "vol" } },
      mode: BackupMode.BACKUP_MODE_AUTO,
    });
  const image = { pool: "rbd", namespace: "", image: "vol" };

  it("the probe (keep_open) holds the volume and the backup takes it: one open between them, all closed after", async () => {
    const fc = new FakeBackupCluster();
    const vol = fc.volume("vol");
    const ctx = { ...fc.context(quiet), openVolumes: new Holder(60_000) };
    const r = await new AgentOperations(ctx, () => true).probe({
      pools: [],
      namespaces: [],
      image,
      keepOpen: true,
      checkTrash: false,
    });
    assert.equal(r.imageSize, vol.size);
    assert.deepEqual([vol.open, fc.ioOpen, ctx.openVolumes.size], [1, 1, 1], "held for the backup");
    const result = await backup(ctx, request(), new AbortController().signal);
    assert.ok(result.snapshot, "the backup ran");
    assert.equal(vol.opened, 1, "the backup did not open the volume again");
    assert.deepEqual([vol.open, fc.ioOpen, ctx.openVolumes.size], [0, 0, 0], "everything closed");
  });

  it("an empty volume is not held (the API refuses its backup)", async () => {
    const fc = new FakeBackupCluster();
    const empty = new FakeImage("empty", 0);
    fc.images.set("empty", empty);
    const ctx = { ...fc.context(quiet), openVolumes: new Holder(60_000) };
    const r = await new AgentOperations(ctx, () => true).probe({
      pools: [],
      namespaces: [],
      image: { ...image, image: "empty" },
      keepOpen: true,
      checkTrash: false,
    });
    assert.deepEqual([r.imageExists, r.imageSize], [true, 0]);
    assert.deepEqual([empty.open, fc.ioOpen, ctx.openVolumes.size], [0, 0, 0]);
  });

  it("without keep_open (or without a holder) the probe closes what it opened; the backup opens the volume itself", async () => {
    const fc = new FakeBackupCluster();
    const vol = fc.volume("vol");
    const ctx = { ...fc.context(quiet), openVolumes: new Holder(60_000) };
    await new AgentOperations(ctx, () => true).probe({
      pools: [],
      namespaces: [],
      image,
      keepOpen: false,
      checkTrash: false,
    });
    assert.deepEqual([vol.open, fc.ioOpen, ctx.openVolumes.size], [0, 0, 0]);
    await new AgentOperations(fc.context(quiet), () => true).probe({
      pools: [],
      namespaces: [],
      image,
      keepOpen: true,
      checkTrash: false,
    });
    assert.deepEqual([vol.open, fc.ioOpen], [0, 0], "no holder: nothing kept");
    await backup(ctx, request(), new AbortController().signal);
    assert.equal(vol.opened, 3, "two probes and the backup each opened it");
    assert.deepEqual([vol.open, fc.ioOpen], [0, 0]);
  });
});
