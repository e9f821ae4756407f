/**
 * Least privilege on the agent side, against real clusters (issue 12, attacks 1, 3 and 4): AgentService
 * only for the coordinator and, for mutating calls, only under its lease; TransferService only for
 * agents and a Transfer only with a capability for exactly what it writes; path sources only under
 * `sourcePaths`. Every refused call leaves the volumes, their snapshots and the backups as they were
 * (sha256 of `rbd export`, snapshot lists). Ends with the table: every credential kind × every method.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ChannelCredentials } from "@grpc/grpc-js";
import { type CallOptions, createChannel, createClient, Metadata, Status } from "nice-grpc";
import { CAPABILITY_HEADER, LEASE_METADATA_KEY } from "../../../src/common/capability";
import { backupTransferAllows, deleteOperationAsks, ownChain, restoreTransferAllows } from "../../../src/common/grants";
import { channelCredentials, type TlsConfig, tlsChannelOptions } from "../../../src/common/tls";
import {
  type AgentServiceClient,
  AgentServiceDefinition,
  type BackupResult,
  DeleteBackupDataRequest,
} from "../../../src/gen/rbdbackup/v1/agent";
import type { ImageRef } from "../../../src/gen/rbdbackup/v1/common";
import {
  type TransferHeader,
  TransferKind,
  type TransferMessage,
  type TransferServiceClient,
  TransferServiceDefinition,
} from "../../../src/gen/rbdbackup/v1/transfer";
import { labClusterInfo, labTls, repoRoot } from "../../../src/lab/agent-process";
import { labAgentClient } from "../../../src/lab/lab-leases";
import { labMinter, type RunningAgent, startAgent, transferCapabilityFor } from "../../helpers/agents";
import { uniqueName } from "../../helpers/lab";
import { MiB, sha, spec, Volumes } from "../../helpers/volumes";

const SITE_A = { cluster: "site-a", agentId: "agent-site-a" };
const SITE_B = { cluster: "site-b", agentId: "agent-site-b" };

describe("least privilege on the agents", () => {
  let a: RunningAgent;
  let b: RunningAgent;
  const vols = new Volumes();
  const allowed = mkdtempSync(path.join(tmpdir(), "rbdbackup-authz-sources-"));
  const closers: Array<() => void> = [];
  let prodA: ImageRef; // a production volume on site-a
  let prodB: ImageRef; // a production volume on site-b, with a user snapshot
  let r: BackupResult; // a real backup of prodA on site-b

  /** What must not change: contents and snapshots of the volumes and of the backup. */
  const fingerprint = async () => ({
    prodA: await sha("site-a", spec(prodA)),
    prodASnaps: await vols.snapNames("site-a", prodA),
    prodB: await sha("site-b", spec(prodB)),
    prodBSnaps: await vols.snapNames("site-b", prodB),
    backup: await sha("site-b", `backups/${r.baseImage}@${r.snapshot}`),
    backupSnaps: await vols.snapNames("site-b", { pool: "backups", namespace: "", image: r.baseImage }),
  });

  const agentClient = (agent: RunningAgent, cert: string): AgentServiceClient => {
    const c = labAgentClient(agent.address, labTls(cert));
    closers.push(c.close);
    return c.client;
  };
  const transferClient = (agent: RunningAgent, tls: TlsConfig | ChannelCredentials): TransferServiceClient => {
    const creds = tls instanceof ChannelCredentials ? tls : channelCredentials(tls);
    const ch = createChannel(
      agent.transferAddress,
      creds,
      tlsChannelOptions(agent.transferAddress, labTls("coordinator")),
    );
    closers.push(() => ch.close());
    return createClient(TransferServiceDefinition, ch);
  };
  const withLease = (lease: string): CallOptions => ({ metadata: Metadata({ [LEASE_METADATA_KEY]: lease }) });
  const withCapability = (cap: string): CallOptions => ({ metadata: Metadata({ [CAPABILITY_HEADER]: cap }) });
  const denied = (re?: RegExp) => (e: unknown) => {
    const err = e as { code?: number; details?: string };
    assert.equal(err.code, Status.PERMISSION_DENIED, `expected PERMISSION_DENIED, got ${err.code}: ${err.details}`);
    if (re) assert.match(err.details ?? "", re);
    return true;
  };

  before(async () => {
    [a, b] = await Promise.all([
      startAgent("site-a", { sourcePaths: [allowed] }),
      startAgent("site-b", { sourcePaths: [allowed] }),
    ]);
    prodA = await vols.create("site-a", "rbd", 16, 20, "prod");
    prodB = await vols.create("site-b", "rbd", 16, 20, "prod");
    const io = await vols.io("site-b", "rbd");
    const img = await io.imageOpen(prodB.image);
    try {
      await img.snapCreate("user-snap");
    } finally {
      await img.close();
    }
    await vols.change(prodB, "site-b", { writes: 10 }); // later writes a rollback would lose
    r = await a.client.backup({
      backupId: randomUUID(),
      source: { $case: "volume", value: prodA },
      destination: { address: b.transferAddress, clusterFsid: b.fsid },
      destinationPool: "backups",
    });
    vols.track("site-b", "backups", r.baseImage);
  });

  after(async () => {
    for (const c of closers) c();
    await Promise.all([a?.stop(), b?.stop()]);
    await vols.cleanup();
    rmSync(allowed, { recursive: true, force: true });
  });

  describe("1: DeleteBackup naming a production volume as base_image", () => {
    const attack = () =>
      DeleteBackupDataRequest.fromPartial({ backupId: r.backupId, pool: "rbd", namespace: "", baseImage: prodA.image });

    it("with an agent certificate → PERMISSION_DENIED (only the coordinator), nothing changed", async () => {
      const before = await fingerprint();
      for (const cert of ["agent-site-a", "agent-site-b"]) {
        await assert.rejects(agentClient(a, cert).deleteBackup(attack()), denied(/only for the coordinator/));
      }
      // The backup itself, on its own agent, with an agent certificate: refused too.
      const real = { backupId: r.backupId, pool: "backups", namespace: "", baseImage: r.baseImage };
      await assert.rejects(agentClient(b, "agent-site-a").deleteBackup(real), denied(/only for the coordinator/));
      assert.deepEqual(await fingerprint(), before);
    });

    it("with the coordinator's certificate but no, a forged, or another backup's lease → PERMISSION_DENIED", async () => {
      const before = await fingerprint();
      const coord = agentClient(a, "coordinator"); // no minting: the test chooses the lease
      const genuine = labMinter(SITE_A).mint("operation", deleteOperationAsks(attack()));
      const [body, sig, cert] = genuine.split(".") as [string, string, string];
      const grant = JSON.parse(Buffer.from(body, "base64url").toString("utf8"));
      grant.exp += 1;
      const forged = `${Buffer.from(JSON.stringify(grant)).toString("base64url")}.${sig}.${cert}`;
      const otherBackup = labMinter(SITE_A).mint(
        "operation",
        deleteOperationAsks(DeleteBackupDataRequest.fromPartial({ ...attack(), backupId: randomUUID() })),
      );
      const otherAgent = labMinter(SITE_B).mint("operation", deleteOperationAsks(attack()));
      await assert.rejects(coord.deleteBackup(attack()), denied(/none presented/));
      await assert.rejects(coord.deleteBackup(attack(), withLease(forged)), denied(/bad signature/));
      await assert.rejects(coord.deleteBackup(attack(), withLease(otherBackup)), denied(/backupId/));
      await assert.rejects(coord.deleteBackup(attack(), withLease(otherAgent)), denied(/issued to agent site-b/));
      assert.deepEqual(await fingerprint(), before);
    });
  });

  describe("3: TransferService.Transfer called directly", () => {
    const header = (kind: TransferKind, dest: ImageRef, extra: Partial<TransferHeader> = {}): TransferHeader => ({
      transferId: randomUUID(),
      resumeOffset: 0,
      resumePrefixDigest: new Uint8Array(0),
      resumable: false,
      allowOpen: false,
      compression: 0,
      jobId: "",
      kind,
      destination: dest,
      fromSnapshot: "",
      toSnapshot: `rbdbackup-${randomUUID()}`,
      imageSize: 16 * MiB,
      features: 0,
      order: 22,
      stripeUnit: 0,
      stripeCount: 0,
      imageMeta: {},
      backupId: randomUUID(),
      metadataJson: Buffer.alloc(0),
      expectedFsid: "",
      chunkSize: MiB,
      ...extra,
    });
    async function* stream(h: TransferHeader): AsyncIterable<TransferMessage> {
      yield { body: { $case: "header", value: h } };
      yield { body: { $case: "zero", value: { offset: 0, length: 4 * MiB } } };
    }
    const attacks = (): Array<[string, TransferHeader]> => {
      const fullId = randomUUID();
      return [
        [
          "RESTORE_ORIGINAL over a non-backup image",
          header(TransferKind.RESTORE_ORIGINAL, prodB, { imageSize: 4 * MiB }),
        ],
        [
          "BACKUP_INCREMENTAL onto a production image",
          header(TransferKind.BACKUP_INCREMENTAL, prodB, { fromSnapshot: "user-snap" }),
        ],
        [
          "BACKUP_FULL into the volume pool",
          header(
            TransferKind.BACKUP_FULL,
            { pool: "rbd", namespace: "", image: `${uniqueName("planted")}.backup.${fullId}` },
            { backupId: fullId },
          ),
        ],
        [
          "a forged backup snapshot into a chain",
          header(
            TransferKind.BACKUP_INCREMENTAL,
            { pool: "backups", namespace: "", image: r.baseImage },
            {
              fromSnapshot: r.snapshot,
            },
          ),
        ],
      ];
    };

    it("each attack, as site-a's agent: no capability, one for another image or backup, one held by another agent → PERMISSION_DENIED, nothing changed", async () => {
      const before = await fingerprint();
      const client = transferClient(b, labTls("agent-site-a"));
      const otherTarget = restoreTransferAllows({
        backupId: r.backupId,
        pool: "rbd",
        namespace: "",
        image: uniqueName("elsewhere"),
        mode: "new",
        fsid: b.fsid,
      });
      for (const [what, h] of attacks()) {
        const imagesBefore = await (await vols.io("site-b", h.destination?.pool ?? "")).imageList();
        await assert.rejects(client.transfer(stream(h)), denied(/none presented/), `${what}: no capability`);
        const other = labMinter(SITE_A).mint("transfer", otherTarget);
        await assert.rejects(client.transfer(stream(h), withCapability(other)), denied(), `${what}: another image`);
        // A capability for exactly this stream, when the layout allows one at all, but held by site-b's agent.
        let heldByB: string | null = null;
        try {
          heldByB = transferCapabilityFor(h, SITE_B);
        } catch {
          heldByB = labMinter(SITE_B).mint("transfer", otherTarget);
        }
        await assert.rejects(
          client.transfer(stream(h), withCapability(heldByB)),
          denied(/issued to agent site-b/),
          `${what}: another holder`,
        );
        const imagesAfter = await (await vols.io("site-b", h.destination?.pool ?? "")).imageList();
        assert.deepEqual(imagesAfter.sort(), imagesBefore.sort(), `${what}: no image created or removed`);
      }
      assert.deepEqual(await fingerprint(), before);
    });

    it("a backup capability never covers a non-layout image, even held by the caller", async () => {
      const before = await fingerprint();
      const client = transferClient(b, labTls("agent-site-a"));
      const h = header(TransferKind.BACKUP_INCREMENTAL, prodB, { fromSnapshot: "user-snap" });
      const cap = labMinter(SITE_A).mint("transfer", {
        purpose: "backup",
        backupId: h.backupId,
        pool: "rbd",
        namespace: "",
        volumeImage: prodB.image,
      });
      await assert.rejects(client.transfer(stream(h), withCapability(cap)), denied(/only write a base image/));
      assert.deepEqual(await fingerprint(), before);
    });
  });

  describe("3b: TransferService.ListChains (which backups of a volume exist)", () => {
    const capFor = (over: { volumeImage?: string; fsid?: string; chains?: string[] } = {}, holder = SITE_A) => {
      const backupId = randomUUID();
      const volumeImage = over.volumeImage ?? prodA.image;
      return labMinter(holder).mint("transfer", {
        ...backupTransferAllows({
          backupId,
          pool: "backups",
          namespace: "",
          volumeImage,
          fsid: over.fsid ?? b.fsid,
          chains: [ownChain(volumeImage, backupId), ...(over.chains ?? [])],
        }),
        toAgent: "agent-site-b",
      });
    };
    const req = () => ({ pool: "backups", namespace: "", volumeImage: prodA.image });

    it("with the capability of a backup of that volume into that pool: the chains it names, the backup's among them; a chain it does not name is not shown", async () => {
      const client = transferClient(b, labTls("agent-site-a"));
      const res = await client.listChains(req(), withCapability(capFor({ chains: [r.baseImage] })));
      assert.equal(res.clusterFsid, b.fsid);
      assert.deepEqual(
        res.chains.map((c) => c.baseImage),
        [r.baseImage],
      );
      // A capability whose chains do not include it (another volume of the same image name backed up
      // here would be such a chain): nothing of it listed.
      const other = await client.listChains(req(), withCapability(capFor()));
      assert.deepEqual(other.chains, []);
    });

    it("none, another volume's, another cluster's, a restore's, another holder's → PERMISSION_DENIED, nothing listed", async () => {
      const client = transferClient(b, labTls("agent-site-a"));
      const restoreCap = labMinter(SITE_A).mint(
        "transfer",
        restoreTransferAllows({
          backupId: r.backupId,
          pool: "backups",
          namespace: "",
          image: prodA.image,
          mode: "new",
          fsid: b.fsid,
        }),
      );
      const refused: Array<[string, CallOptions, RegExp]> = [
        ["none", {}, /none presented/],
        ["another volume's", withCapability(capFor({ volumeImage: uniqueName("other") })), /volumeImage/],
        ["another cluster's", withCapability(capFor({ fsid: a.fsid })), /fsid/],
        ["a restore's", withCapability(restoreCap), /purpose/],
        ["site-b's agent's", withCapability(capFor({}, { cluster: "site-b", agentId: "agent-site-b" })), /issued to/],
      ];
      for (const [what, opts, re] of refused) {
        await assert.rejects(client.listChains(req(), opts), denied(re), what);
      }
    });
  });

  describe("4: AgentService.Backup of a file path", () => {
    const keyring = () => labClusterInfo("site-a").keyring;
    const request = () => ({
      backupId: randomUUID(),
      source: { $case: "path" as const, value: keyring() },
      sourceName: uniqueName("keyring"),
      destination: { address: b.transferAddress, clusterFsid: b.fsid },
      destinationPool: "backups",
    });
    const nothingSent = async (sourceName: string) => {
      const images = await (await vols.io("site-b", "backups")).imageList();
      assert.deepEqual(
        images.filter((i) => i.startsWith(`${sourceName}.backup.`)),
        [],
        "no base image for the path on the destination",
      );
    };

    it("not the coordinator → PERMISSION_DENIED; nothing sent", async () => {
      const req = request();
      await assert.rejects(agentClient(a, "agent-site-b").backup(req), denied(/only for the coordinator/));
      await assert.rejects(agentClient(a, "test-client").backup(req), denied(/only for the coordinator/));
      await nothingSent(req.sourceName);
    });

    it("the coordinator with a lease, but the path is outside sourcePaths (also via .. and a symlink) → PERMISSION_DENIED naming the field", async () => {
      const link = path.join(allowed, "keyring-link");
      execFileSync("ln", ["-s", keyring(), link]);
      for (const p of [keyring(), path.join(allowed, "..", path.relative(path.dirname(allowed), keyring())), link]) {
        const req = { ...request(), source: { $case: "path" as const, value: p } };
        await assert.rejects(a.client.backup(req), denied(/sourcePaths/), p);
        await nothingSent(req.sourceName);
      }
    });
  });

  describe("the table: every credential kind × every method", () => {
    const foreignDir = mkdtempSync(path.join(tmpdir(), "rbdbackup-foreign-ca-"));
    after(() => rmSync(foreignDir, { recursive: true, force: true }));

    type Kind =
      | "none"
      | "foreign CA"
      | "no-identity"
      | "test-client"
      | "operator"
      | "reader"
      | "agent-site-a"
      | "agent-site-b"
      | "coordinator";
    const KINDS: Kind[] = [
      "none",
      "foreign CA",
      "no-identity",
      "test-client",
      "operator",
      "reader",
      "agent-site-a",
      "agent-site-b",
      "coordinator",
    ];
    const credentials = (k: Kind): ChannelCredentials => {
      const lab = labTls("coordinator");
      const read = (f: string) => execFileSync("cat", [f]);
      if (k === "none") return ChannelCredentials.createSsl(read(lab.ca as string));
      if (k === "foreign CA") {
        execFileSync(
          path.join(repoRoot, "deploy/tls/gen-certs.sh"),
          [foreignDir, "intruder=rbdbackup://coordinator/lab"],
          {
            stdio: "ignore",
          },
        );
        return ChannelCredentials.createSsl(
          read(lab.ca as string),
          read(path.join(foreignDir, "intruder.key")),
          read(path.join(foreignDir, "intruder.pem")),
        );
      }
      const t = labTls(k);
      return ChannelCredentials.createSsl(read(t.ca as string), read(t.key as string), read(t.cert as string));
    };
    /** What each kind gets: handshake refused, refused by identity, or let through (then the lease/capability decides). */
    const expected = (k: Kind, service: "agent" | "transfer"): "handshake" | "identity" | "through" => {
      if (k === "none" || k === "foreign CA") return "handshake";
      if (service === "agent") return k === "coordinator" ? "through" : "identity";
      return k === "agent-site-a" || k === "agent-site-b" ? "through" : "identity";
    };

    it("AgentService and TransferService: exact statuses; nothing changed", async () => {
      const before = await fingerprint();
      for (const k of KINDS) {
        const ch = createChannel(a.address, credentials(k), tlsChannelOptions(a.address, labTls("coordinator")));
        const tch = createChannel(
          b.transferAddress,
          credentials(k),
          tlsChannelOptions(b.transferAddress, labTls("coordinator")),
        );
        closers.push(
          () => ch.close(),
          () => tch.close(),
        );
        const agent = createClient(AgentServiceDefinition, ch);
        const transfer = createClient(TransferServiceDefinition, tch);
        const missing = { pool: "rbd", namespace: "", image: uniqueName("absent") };
        const calls: Array<[string, "agent" | "transfer", "read" | "guarded", () => Promise<unknown>]> = [
          ["GetInfo", "agent", "read", () => agent.getInfo({})],
          ["CheckCluster", "agent", "read", () => agent.checkCluster({ backupPool: "backups" })],
          ["ListBackupSnapshots", "agent", "read", () => agent.listBackupSnapshots({ image: prodA })],
          [
            "GetBackupMetadata",
            "agent",
            "read",
            () => agent.getBackupMetadata({ pool: "rbd", namespace: "", backupId: randomUUID() }),
          ],
          [
            "Backup",
            "agent",
            "guarded",
            () =>
              agent.backup({
                backupId: randomUUID(),
                source: { $case: "volume", value: prodA },
                destination: { address: b.transferAddress, clusterFsid: b.fsid },
              }),
          ],
          [
            "Restore",
            "agent",
            "guarded",
            () => agent.restore({ backupId: r.backupId, backupPool: "backups", target: missing }),
          ],
          [
            "DeleteBackup",
            "agent",
            "guarded",
            () => agent.deleteBackup({ backupId: r.backupId, pool: "backups", baseImage: r.baseImage }),
          ],
          [
            "Flatten",
            "agent",
            "guarded",
            () =>
              agent.flatten({
                image: prodA,
                backupId: r.backupId,
                backupPool: "backups",
                backupNamespace: "",
                baseImage: r.baseImage,
                jobId: "",
              }),
          ],
          [
            "ListChains",
            "transfer",
            "guarded",
            () => transfer.listChains({ pool: "backups", namespace: "", volumeImage: prodA.image }),
          ],
          [
            "Transfer",
            "transfer",
            "guarded",
            () =>
              transfer.transfer(
                (async function* () {
                  yield {
                    body: {
                      $case: "header",
                      value: {
                        transferId: randomUUID(),
                        kind: TransferKind.RESTORE_NEW,
                        destination: missing,
                        imageSize: 4 * MiB,
                        order: 22,
                        backupId: randomUUID(),
                        chunkSize: MiB,
                      },
                    },
                  } as TransferMessage;
                })(),
              ),
          ],
          [
            "ResumePoint",
            "transfer",
            "guarded",
            () =>
              transfer.resumePoint({
                header: {
                  transferId: randomUUID(),
                  kind: TransferKind.RESTORE_NEW,
                  destination: missing,
                  imageSize: 4 * MiB,
                  order: 22,
                  backupId: randomUUID(),
                  chunkSize: MiB,
                } as TransferHeader,
              }),
          ],
        ];
        const covered = calls.map(([m, svc]) => `${svc}/${m}`).sort();
        const all = [
          ...Object.values(AgentServiceDefinition.methods).map((m) => `agent/${m.name}`),
          ...Object.values(TransferServiceDefinition.methods).map((m) => `transfer/${m.name}`),
        ].sort();
        assert.deepEqual(covered, all, "the table covers every AgentService and TransferService method");
        for (const [method, service, kind, call] of calls) {
          const want = expected(k, service);
          let got: number;
          let details = "";
          try {
            await call();
            got = Status.OK;
          } catch (e) {
            got = (e as { code: number }).code;
            details = (e as { details?: string }).details ?? "";
          }
          const wantCode =
            want === "handshake"
              ? Status.UNAVAILABLE
              : want === "identity" || kind === "guarded"
                ? Status.PERMISSION_DENIED
                : Status.OK;
          assert.equal(got, wantCode, `${k} × ${method}: ${Status[got]} ${details}`);
          if (want === "identity") assert.match(details, /only for (the coordinator|agents)/, `${k} × ${method}`);
          if (want === "through" && kind === "guarded") assert.match(details, /capability refused/, `${k} × ${method}`);
        }
      }
      assert.deepEqual(await fingerprint(), before);
    });
  });
});
