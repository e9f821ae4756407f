/**
 * Transfer capabilities name the destination cluster (fsid) and the chain (issue 12), against real
 * clusters: a capability minted for a backup into site-b, replayed against site-small (same pool and
 * image names), is refused PERMISSION_DENIED before anything is written on either cluster — through
 * AgentService.Backup and directly on the data plane; a stream into a chain the minter never made is
 * refused; and genuine full and incremental backups (capabilities naming fsid and chains) still work.
 */
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { createChannel, createClient, Metadata, Status } from "nice-grpc";
import { CAPABILITY_HEADER } from "../../../src/common/capability";
import { channelCredentials, tlsChannelOptions } from "../../../src/common/tls";
import { BackupRequest } from "../../../src/gen/rbdbackup/v1/agent";
import type { ImageRef } from "../../../src/gen/rbdbackup/v1/common";
import {
  type TransferHeader,
  TransferKind,
  type TransferMessage,
  TransferServiceDefinition,
} from "../../../src/gen/rbdbackup/v1/transfer";
import { labTls } from "../../../src/lab/agent-process";
import { backupTransferFields } from "../../../src/lab/lab-leases";
import { labMinter, type RunningAgent, startAgent, startAgents, transferCapabilityFor } from "../../helpers/agents";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";
import { messages } from "../../unit/transfer/fakes/stream";

const SITE_A = { cluster: "site-a", agentId: "agent-site-a" };

describe("capabilities name the destination cluster and the chain", () => {
  let a: RunningAgent;
  let b: RunningAgent;
  let small: RunningAgent;
  const vols = new Volumes();
  const closers: Array<() => void> = [];
  let prod: ImageRef;

  /**
   * What must not change: this volume's images in the backup pools of both destinations (only ours:
   * other tests share the lab), their snapshots, and the volume's snapshots.
   */
  const ours = async (cluster: string) => {
    const io = await vols.io(cluster, "backups");
    const names = (await io.imageList()).filter((i) => i.startsWith(`${prod.image}.`)).sort();
    const snaps = await Promise.all(
      names.map((n) => vols.snapNames(cluster, { pool: "backups", namespace: "", image: n })),
    );
    return names.map((n, i) => `${n}@${(snaps[i] ?? []).join(",")}`);
  };
  const state = async () => ({
    siteB: await ours("site-b"),
    siteSmall: await ours("site-small"),
    prodSnaps: await vols.snapNames("site-a", prod),
  });
  const denied = (re: RegExp) => (e: unknown) => {
    const err = e as { code?: number; details?: string };
    assert.equal(err.code, Status.PERMISSION_DENIED, `expected PERMISSION_DENIED, got ${err.code}: ${err.details}`);
    assert.match(err.details ?? "", re);
    return true;
  };

  before(async () => {
    [a, b, small] = (await startAgents("site-a", "site-b", "site-small")) as [RunningAgent, RunningAgent, RunningAgent];
    prod = await vols.create("site-a", "rbd", 8, 10, "replay");
  });

  after(async () => {
    for (const c of closers) c();
    await Promise.all([a?.stop(), b?.stop(), small?.stop()]);
    await vols.cleanup();
  });

  it("genuine backups into site-b: a full one, then an incremental in the chain the minter knows", async () => {
    const dest = { address: b.transferAddress, clusterFsid: b.fsid };
    const full = await a.client.backup({
      backupId: randomUUID(),
      source: { $case: "volume", value: prod },
      destination: dest,
      destinationPool: "backups",
    });
    vols.track("site-b", "backups", full.baseImage);
    assert.equal(full.incremental, false);
    await vols.change(prod, "site-a", { writes: 3 });
    const incr = await a.client.backup({
      backupId: randomUUID(),
      source: { $case: "volume", value: prod },
      destination: dest,
      destinationPool: "backups",
    });
    assert.equal(incr.incremental, true, "the chain named in the capability was accepted");
    assert.equal(incr.baseImage, full.baseImage);
  });

  it("a backup capability minted for site-b, replayed by the source against site-small → PERMISSION_DENIED, nothing written", async () => {
    const before = await state();
    const backupId = randomUUID();
    // What the coordinator minted: a full backup of prod into site-b's backups pool.
    const forB = BackupRequest.fromPartial({
      backupId,
      source: { $case: "volume", value: prod },
      destination: { address: b.transferAddress, clusterFsid: b.fsid },
      destinationPool: "backups",
    });
    const capability = labMinter(SITE_A).mint(
      "transfer",
      backupTransferFields(forB, { ...SITE_A, backupPool: "backups", fsid: a.fsid }),
    );
    // The same backup sent to site-small (same pool name, same image names) with that capability.
    await assert.rejects(
      a.client.backup({
        ...forB,
        destination: { address: small.transferAddress, clusterFsid: small.fsid },
        transferCapability: capability,
      }),
      denied(/fsid|for destination agent agent-site-b/),
    );
    assert.deepEqual(await state(), before);
  });

  describe("directly on the data plane, as site-a's agent", () => {
    const client = (agent: RunningAgent) => {
      const tls = labTls("agent-site-a");
      const ch = createChannel(
        agent.transferAddress,
        channelCredentials(tls),
        tlsChannelOptions(agent.transferAddress, tls),
      );
      closers.push(() => ch.close());
      return createClient(TransferServiceDefinition, ch);
    };
    const header = (kind: TransferKind, image: string, backupId: string, fromSnapshot = ""): TransferHeader => ({
      transferId: randomUUID(),
      jobId: "",
      kind,
      destination: { pool: "backups", namespace: "", image },
      fromSnapshot,
      toSnapshot: `rbdbackup-${randomUUID()}`,
      imageSize: 8 * MiB,
      features: 0,
      order: 22,
      stripeUnit: 0,
      stripeCount: 0,
      imageMeta: {},
      backupId,
      metadataJson: Buffer.alloc(0),
      expectedFsid: "",
      chunkSize: MiB,
      resumeOffset: 0,
      resumePrefixDigest: new Uint8Array(0),
      resumable: false,
      allowOpen: false,
      compression: 0,
    });
    async function* stream(h: TransferHeader): AsyncIterable<TransferMessage> {
      yield { body: { $case: "header", value: h } };
      yield { body: { $case: "zero", value: { offset: 0, length: 4 * MiB } } };
    }
    const withCapability = (cap: string) => ({ metadata: Metadata({ [CAPABILITY_HEADER]: cap }) });

    it("a capability for exactly this stream into site-b, presented to site-small → PERMISSION_DENIED, no image", async () => {
      const before = await state();
      const id = randomUUID();
      const h = header(TransferKind.BACKUP_FULL, `${prod.image}.backup.${id}`, id);
      const forB = transferCapabilityFor(h, SITE_A, "site-b");
      await assert.rejects(
        client(small).transfer(stream(h), withCapability(forB)),
        denied(/fsid|for destination agent agent-site-b/),
      );
      assert.deepEqual(await state(), before);
    });

    it("a capability is good for one committed stream: replayed after its restore committed → PERMISSION_DENIED, the volume unchanged", async () => {
      const target = await vols.create("site-b", "rbd", 8, 2, "replay-target");
      const id = randomUUID();
      const h: TransferHeader = {
        ...header(TransferKind.RESTORE_ORIGINAL, target.image, id),
        destination: { pool: "rbd", namespace: "", image: target.image },
        toSnapshot: "",
      };
      const cap = transferCapabilityFor(h, SITE_A, "site-b");
      const from = (msgs: TransferMessage[]) =>
        (async function* () {
          yield* msgs;
        })();
      // A stream over an existing volume covers every byte of it (data, then zeros to the end).
      const summary = await client(b).transfer(
        from(
          messages(h, [
            { offset: 0, data: randomBytes(MiB) },
            { offset: MiB, zero: h.imageSize - MiB },
          ]),
        ),
        withCapability(cap),
      );
      assert.equal(summary.dataBytesWritten, MiB, "the first stream committed");
      const restored = await sha("site-b", spec(target));
      // The same capability again (its job is over): a new stream of other bytes over the volume.
      const replay = messages({ ...h, transferId: randomUUID() }, [{ offset: 0, data: randomBytes(MiB) }]);
      await assert.rejects(
        client(b).transfer(from(replay), withCapability(cap)),
        denied(/already used here by a stream that committed/),
      );
      assert.equal(await sha("site-b", spec(target)), restored, "nothing written");
      // site-b's agent restarted (the same state dir): it still knows the capability was spent.
      await b.stop();
      b = await startAgent("site-b", { stateDir: b.stateDir });
      const again = messages({ ...h, transferId: randomUUID() }, [{ offset: 0, data: randomBytes(MiB) }]);
      await assert.rejects(
        client(b).transfer(from(again), withCapability(cap)),
        denied(/already used here by a stream that committed/),
      );
      // A second agent of site-b (its own state dir, so its own spent set): the capability is not for it.
      const b2 = await startAgent("site-b", { agentId: "agent-site-b-2" });
      try {
        const other = messages({ ...h, transferId: randomUUID() }, [{ offset: 0, data: randomBytes(MiB) }]);
        await assert.rejects(
          client(b2).transfer(from(other), withCapability(cap)),
          denied(/it is for destination agent agent-site-b, and this is agent agent-site-b-2/),
        );
      } finally {
        await b2.stop();
      }
      assert.equal(await sha("site-b", spec(target)), restored, "nothing written");
    });

    it("a restore over the original that wrote into the volume and then failed spends its capability too: its replay → PERMISSION_DENIED, the volume unchanged", async () => {
      const target = await vols.create("site-b", "rbd", 8, 2, "replay-cut");
      const h: TransferHeader = {
        ...header(TransferKind.RESTORE_ORIGINAL, target.image, randomUUID()),
        destination: { pool: "rbd", namespace: "", image: target.image },
        toSnapshot: "",
      };
      const cap = transferCapabilityFor(h, SITE_A, "site-b");
      // The holder sends a chunk (written), then one whose checksum is wrong: DATA_LOSS, nothing committed.
      const before = await sha("site-b", spec(target));
      const msgs = messages(h, [
        { offset: 0, data: randomBytes(MiB) },
        { offset: MiB, data: randomBytes(MiB) },
      ]);
      const bad = msgs[2];
      assert.ok(bad?.body?.$case === "chunk");
      bad.body.value.crc32 = (bad.body.value.crc32 ^ 1) >>> 0;
      const first = (async function* () {
        yield* msgs;
      })();
      await assert.rejects(client(b).transfer(first, withCapability(cap)), (e: unknown) => {
        assert.equal((e as { code?: number }).code, Status.DATA_LOSS, String(e));
        return true;
      });
      const overwritten = await sha("site-b", spec(target));
      assert.notEqual(overwritten, before, "the first chunk was written over the volume");
      // A whole stream this time (it would commit): refused before anything is written.
      const replay = messages({ ...h, transferId: randomUUID() }, [{ offset: 0, data: randomBytes(MiB) }]);
      const whole = (async function* () {
        yield* replay;
      })();
      await assert.rejects(
        client(b).transfer(whole, withCapability(cap)),
        denied(/already used here by a stream that committed, or that wrote into a volume/),
      );
      assert.equal(await sha("site-b", spec(target)), overwritten, "the replay wrote nothing");
    });

    it("an incremental into a chain the capability does not name → PERMISSION_DENIED, nothing changed", async () => {
      const before = await state();
      const id = randomUUID();
      const chains = before.siteB.map((i) => i.split("@")[0] as string);
      assert.equal(chains.length, 1, "the chain the first test made");
      // A capability naming only the backup's own chain, but the stream writes into the existing one.
      const own = header(TransferKind.BACKUP_FULL, `${prod.image}.backup.${id}`, id);
      const cap = transferCapabilityFor(own, SITE_A, "site-b");
      const into = header(TransferKind.BACKUP_INCREMENTAL, chains[0] as string, id, "rbdbackup-parent");
      await assert.rejects(client(b).transfer(stream(into), withCapability(cap)), denied(/chain/));
      assert.deepEqual(await state(), before);
    });
  });
});
