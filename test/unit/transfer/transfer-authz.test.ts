/**
 * The destination's Transfer check without Ceph (agents/transfer/transfer-authz.ts): who may use the data
 * plane, and a stream reaches the sink only when the caller's capability allows exactly its header —
 * otherwise PERMISSION_DENIED and the message source is closed unread beyond the header.
 */
import assert from "node:assert/strict";
import { randomUUID, X509Certificate } from "node:crypto";
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { Status } from "nice-grpc";
import type { AuthzAudit } from "../../../agents/transfer/authz-audit";
import {
  admitTransferCaller,
  authorizeListChains,
  authorizeResumePoint,
  authorizeTransfer,
  dataPlaneRefusal,
  ownVisibleChains,
  RESUME_POINT_METHOD,
  SpentCapabilities,
  type TransferCaller,
} from "../../../agents/transfer/transfer-authz";
import { type CapabilityError, CapabilitySigner, CapabilityVerifier } from "../../../src/common/capability";
import { backupTransferAllows, ownChain, restoreJobTransferAllows, transferAsks } from "../../../src/common/grants";
import type { Identity } from "../../../src/common/identity";
import { RestoreMode } from "../../../src/gen/rbdbackup/v1/agent";
import { type TransferHeader, TransferKind, type TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";
import { labTls } from "../../../src/lab/agent-process";

const coord = labTls("coordinator");
const coordinator = new CapabilitySigner(readFileSync(coord.cert as string), readFileSync(coord.key as string));
/** Signs as the coordinator does for a stream sent to agent b1 (HERE): the grant names it, unless it names another. */
const signer = {
  sign: (g: Parameters<CapabilitySigner["sign"]>[0], ttlMs: number) =>
    coordinator.sign({ ...g, allows: { toAgent: "b1", ...g.allows } }, ttlMs),
};
const verifier = new CapabilityVerifier(readFileSync(coord.ca as string));
const siteA: Identity = { kind: "agent", cluster: "site-a", agentId: "agent-site-a" };
const siteB = { cluster: "site-b", agentId: "agent-site-b" };
/** The destination's cluster (the agent running the check), and another one. */
const FSID = "6c1d4c4e-0000-4000-8000-00000000000b";
const OTHER_FSID = "6c1d4c4e-0000-4000-8000-00000000000c";
/** The destination agent judging the streams: agent b1 of the cluster with FSID. */
const HERE = { fsid: FSID, agentId: "b1" };

const header = (kind: TransferKind, image: string, pool = "backups"): TransferHeader => {
  const backupId = randomUUID();
  return {
    transferId: randomUUID(),
    jobId: "",
    kind,
    destination: { pool, namespace: "", image: image.replace("$ID", backupId) },
    fromSnapshot: kind === TransferKind.BACKUP_INCREMENTAL ? "rbdbackup-parent" : "",
    toSnapshot:
      kind === TransferKind.RESTORE_NEW || kind === TransferKind.RESTORE_ORIGINAL || kind === TransferKind.FAILBACK
        ? ""
        : `rbdbackup-${backupId}`,
    imageSize: 4 << 20,
    features: 0,
    order: 22,
    stripeUnit: 0,
    stripeCount: 0,
    imageMeta: {},
    backupId,
    metadataJson: Buffer.alloc(0),
    expectedFsid: "",
    chunkSize: 1 << 20,
    resumeOffset: 0,
    resumePrefixDigest: new Uint8Array(0),
    resumable: false,
    allowOpen: false,
    compression: 0,
  };
};

/** A message source that records how far it was read and whether it was closed. */
function source(h: TransferHeader) {
  const msgs: TransferMessage[] = [
    { body: { $case: "header", value: h } },
    { body: { $case: "zero", value: { offset: 0, length: 4096 } } },
  ];
  const seen = { read: 0, closed: false };
  let i = 0;
  const it: AsyncIterator<TransferMessage> = {
    next: async () => {
      if (i >= msgs.length) return { done: true, value: undefined };
      seen.read++;
      return { done: false, value: msgs[i++] as TransferMessage };
    },
    return: async () => {
      seen.closed = true;
      return { done: true, value: undefined };
    },
  };
  return { messages: { [Symbol.asyncIterator]: () => it }, seen };
}

const mint = (h: TransferHeader, holder = { cluster: "site-a", agentId: "agent-site-a" }) =>
  signer.sign({ scope: "transfer", job: "j", attempt: 1, holder, allows: transferAsks(h, FSID) }, 60_000);
const caller = (capability: string | undefined, identity: Identity | null = siteA): TransferCaller => ({
  checked: true,
  identity,
  capability,
});

async function drain(it: AsyncIterable<TransferMessage>): Promise<string[]> {
  const out: string[] = [];
  for await (const m of it) out.push(m.body?.$case ?? "");
  return out;
}

const denied = (re: RegExp) => ({ status: Status.PERMISSION_DENIED, message: re });

describe("transfer authorization", () => {
  it("a capability for exactly this stream, held by the caller: the sink gets every message, header first", async () => {
    const h = header(TransferKind.BACKUP_FULL, "vol.backup.$ID");
    const { messages } = source(h);
    assert.deepEqual(await drain(await authorizeTransfer(verifier, messages, caller(mint(h)), HERE)), [
      "header",
      "zero",
    ]);
  });

  it("a commit spends its job's earlier attempts' capabilities, not a later one's (a retry); the job's end (discard_held) voids them all, also across a restart", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "spent-job-"));
    try {
      const file = path.join(dir, "spent");
      const spent = new SpentCapabilities({ file });
      const h = header(TransferKind.RESTORE_ORIGINAL, "prod", "rbd");
      const holder = { cluster: "site-a", agentId: "agent-site-a" };
      const of = (job: string, attempt: number) =>
        signer.sign({ scope: "transfer", job, attempt, holder, allows: transferAsks(h, FSID) }, 60_000);
      const [first, second, third] = [of("job-1", 1), of("job-1", 2), of("job-1", 3)];
      spent.end(second, true); // attempt 2 committed (or wrote into the volume, then failed)
      await assert.rejects(
        authorizeTransfer(verifier, source(h).messages, caller(first), HERE, undefined, spent),
        denied(/a later attempt of its job did/),
        "attempt 1's capability, never used, is void once attempt 2 committed",
      );
      // Attempt 3 — the coordinator's retry of a restore whose outcome it did not hear, or that was cut
      // short after it wrote — is let through (it writes again, or resumes).
      assert.deepEqual(
        await drain(await authorizeTransfer(verifier, source(h).messages, caller(third), HERE, undefined, spent)),
        ["header", "zero"],
      );
      spent.end(third, false);
      const cancelled = of("job-2", 1);
      assert.equal(spent.spent(cancelled), false);
      spent.endJob("job-2"); // cancelled before its stream came
      await assert.rejects(
        authorizeTransfer(verifier, source(h).messages, caller(cancelled), HERE, undefined, spent),
        denied(/its job has ended/),
      );
      assert.equal(new SpentCapabilities({ file }).spent(cancelled), true, "remembered after a restart");
      const other = of("job-3", 1);
      assert.deepEqual(
        await drain(await authorizeTransfer(verifier, source(h).messages, caller(other), HERE, undefined, spent)),
        ["header", "zero"],
        "another job's is not",
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a capability spent by a committed stream is refused until it would have expired; another is not", async () => {
    let now = 1_000_000;
    const spent = new SpentCapabilities({ ttlMs: 60_000, now: () => now });
    const h = header(TransferKind.RESTORE_ORIGINAL, "prod", "rbd");
    const used = mint(h);
    spent.spend(used);
    await assert.rejects(
      authorizeTransfer(verifier, source(h).messages, caller(used), HERE, undefined, spent),
      denied(/already used here by a stream that committed/),
    );
    const holder = { cluster: "site-a", agentId: "agent-site-a" };
    // The same job's next attempt (a retry after the first one's outcome was lost) is not spent.
    const fresh = signer.sign(
      { scope: "transfer", job: "j", attempt: 2, holder, allows: transferAsks(h, FSID) },
      60_000,
    );
    assert.notEqual(fresh, used);
    assert.deepEqual(
      await drain(await authorizeTransfer(verifier, source(h).messages, caller(fresh), HERE, undefined, spent)),
      ["header", "zero"],
    );
    // `fresh` is running now: a second stream with it is refused until the first ended uncommitted.
    await assert.rejects(authorizeTransfer(verifier, source(h).messages, caller(fresh), HERE, undefined, spent), {
      status: Status.UNAVAILABLE,
      message: /another stream with this transfer capability is running here/,
    });
    spent.end(fresh, false);
    await drain(await authorizeTransfer(verifier, source(h).messages, caller(fresh), HERE, undefined, spent));
    spent.end(fresh, true);
    await assert.rejects(
      authorizeTransfer(verifier, source(h).messages, caller(fresh), HERE, undefined, spent),
      denied(/already used here by a stream that committed/),
    );
    now += 60_001;
    assert.equal(spent.spent(used), false, "forgotten once past its lifetime");
  });

  it("a spent capability, or one whose stream runs, takes no transfer slot: refused at admission (before its header), audited; ResumePoint and ListChains are not Transfers", async () => {
    const spent = new SpentCapabilities();
    const h = header(TransferKind.RESTORE_ORIGINAL, "prod", "rbd");
    const cap = mint(h);
    const lines: Array<{ reason?: string; result?: string }> = [];
    const audit = {
      refused: (l: { reason?: string }) => lines.push({ ...l, result: "PERMISSION_DENIED" }),
      record: (l: { result?: string }) => lines.push(l),
    } as unknown as AuthzAudit;
    assert.doesNotThrow(() => admitTransferCaller(verifier, caller(cap), audit, undefined, HERE, spent));
    assert.equal(spent.begin(cap), "");
    assert.throws(() => admitTransferCaller(verifier, caller(cap), audit, undefined, HERE, spent), {
      status: Status.UNAVAILABLE,
      message: /another stream with this transfer capability is running here/,
    });
    spent.end(cap, true);
    assert.throws(
      () => admitTransferCaller(verifier, caller(cap), audit, undefined, HERE, spent),
      denied(/already used here by a stream that committed/),
    );
    assert.deepEqual(
      lines.map((l) => [l.result, l.reason]),
      [
        ["UNAVAILABLE", undefined],
        ["PERMISSION_DENIED", "bad_capability"],
      ],
      "both audited; only the spent one counts as a refusal",
    );
    assert.doesNotThrow(() => admitTransferCaller(verifier, caller(cap), audit, RESUME_POINT_METHOD, HERE, spent));
    // …but ResumePoint itself refuses a spent capability (no attempt with it follows), audited.
    assert.throws(
      () => authorizeResumePoint(verifier, h, caller(cap), HERE, audit, spent),
      denied(/already used here by a stream that committed/),
    );
    assert.equal(lines.at(-1)?.reason, "bad_capability");
    const unspent = signer.sign(
      {
        scope: "transfer",
        job: "another",
        attempt: 1,
        holder: { cluster: "site-a", agentId: "agent-site-a" },
        allows: transferAsks(h, FSID),
      },
      60_000,
    );
    assert.doesNotThrow(() => authorizeResumePoint(verifier, h, caller(unspent), HERE, audit, spent));
  });

  it("a spent capability re-encoded (another base64url spelling of its signature) is still spent", async () => {
    const h = header(TransferKind.RESTORE_ORIGINAL, "prod", "rbd");
    const A = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // A signature whose encoding has unused low bits in its last character (70 or 71 bytes of DER).
    let used = "";
    let variant = "";
    for (let i = 0; i < 50 && !variant; i++) {
      used = mint(h);
      const [body, sig, der] = used.split(".") as [string, string, string];
      if (Buffer.from(sig, "base64url").length % 3 === 0) continue;
      const last = sig[sig.length - 1] as string;
      variant = [body, sig.slice(0, -1) + A[A.indexOf(last) ^ 1], der].join(".");
    }
    assert.ok(variant && variant !== used, "a signature with unused bits was minted");
    verifier.verify(variant, "transfer", { cluster: "site-a", agentId: "agent-site-a" }); // it verifies
    const spent = new SpentCapabilities();
    spent.spend(used);
    assert.equal(spent.spent(variant), true);
    await assert.rejects(
      authorizeTransfer(verifier, source(h).messages, caller(variant), HERE, undefined, spent),
      denied(/already used here by a stream that committed/),
    );
  });

  it("spent capabilities outlive a restart (the state dir's file); expired and torn lines are dropped, the file compacted", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "spent-"));
    try {
      const file = path.join(dir, "spent-capabilities");
      let now = 1_000_000;
      const first = new SpentCapabilities({ ttlMs: 60_000, now: () => now, file });
      const caps = Array.from({ length: 3 }, (_, i) => `capability-${i}`);
      for (const c of caps) first.spend(c);
      appendFileSync(file, "0123 torn line");
      // A restarted agent: a new instance over the same file.
      const again = new SpentCapabilities({ ttlMs: 60_000, now: () => now, file });
      for (const c of caps) assert.equal(again.spent(c), true, c);
      // Its first spend after the torn line is kept on a line of its own: known after the next restart.
      again.spend("after-the-tear");
      assert.equal(new SpentCapabilities({ ttlMs: 60_000, now: () => now, file }).spent("after-the-tear"), true);
      assert.equal(again.spent("another"), false);
      assert.match(again.begin(caps[0]), /already used here by a stream that committed/);
      // Past their lifetime they are forgotten, and many expired lines are rewritten away.
      now += 60_001;
      assert.equal(new SpentCapabilities({ ttlMs: 60_000, now: () => now, file }).spent(caps[0]), false);
      const busy = new SpentCapabilities({ ttlMs: 1, now: () => now, file });
      for (let i = 0; i < 200; i++) {
        busy.spend(`short-${i}`);
        now += 2;
      }
      const lines = readFileSync(file, "utf8").split("\n").filter(Boolean).length;
      assert.ok(lines < 80, `the file was compacted: ${lines} lines after 200 spends`);
      busy.spend("last");
      assert.equal(new SpentCapabilities({ ttlMs: 1, now: () => now, file }).spent("last"), true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("a capability naming another destination agent of this cluster → PERMISSION_DENIED on every data-plane call", async () => {
    const h = header(TransferKind.BACKUP_FULL, "vol.backup.$ID");
    const holder = { cluster: "site-a", agentId: "agent-site-a" };
    const to = (toAgent?: string) =>
      coordinator.sign(
        {
          scope: "transfer",
          job: "j",
          attempt: 1,
          holder,
          allows: { ...transferAsks(h, FSID), ...(toAgent === undefined ? {} : { toAgent }) },
        },
        60_000,
      );
    const spent = new SpentCapabilities();
    const other = to("b2");
    await assert.rejects(
      authorizeTransfer(verifier, source(h).messages, caller(other), HERE, undefined, spent),
      denied(/it is for destination agent b2, and this is agent b1/),
    );
    assert.equal(spent.begin(other), "", "a refused stream neither ran nor spent it");
    spent.end(other, false);
    assert.throws(() => authorizeResumePoint(verifier, h, caller(other), HERE), denied(/destination agent b2/));
    const chains = { pool: h.destination?.pool ?? "", namespace: "", volumeImage: "vol" };
    assert.throws(() => authorizeListChains(verifier, chains, caller(other), HERE), denied(/destination agent b2/));
    // Naming none (a coordinator before 2026-12-05): refused too; named for this agent: taken.
    await assert.rejects(
      authorizeTransfer(verifier, source(h).messages, caller(to()), HERE),
      denied(/names no destination agent/),
    );
    assert.deepEqual(await drain(await authorizeTransfer(verifier, source(h).messages, caller(to("b1")), HERE)), [
      "header",
      "zero",
    ]);
  });

  it("no capability, another image's, another holder's, a forged one → PERMISSION_DENIED, nothing passed on", async () => {
    const h = header(TransferKind.RESTORE_ORIGINAL, "prod", "rbd");
    const other = header(TransferKind.RESTORE_ORIGINAL, "other", "rbd");
    const genuine = mint(h);
    const [body, , cert] = genuine.split(".");
    const forged = `${body}.${Buffer.from("nope").toString("base64url")}.${cert}`;
    const cases: Array<[string | undefined, RegExp]> = [
      [undefined, /none presented/],
      [mint(other), /it allows/],
      [mint(h, siteB), /issued to agent site-b/],
      [forged, /bad signature/],
    ];
    for (const [cap, re] of cases) {
      const { messages, seen } = source(h);
      await assert.rejects(authorizeTransfer(verifier, messages, caller(cap), HERE), denied(re));
      assert.ok(seen.read <= 1, "nothing beyond the header was read");
    }
  });

  it("a capability for exactly this stream on another cluster (fsid), or another chain → PERMISSION_DENIED, closed", async () => {
    const full = header(TransferKind.BACKUP_FULL, "vol.backup.$ID");
    const restore = header(TransferKind.RESTORE_NEW, "new-image", "rbd");
    const incr = header(TransferKind.BACKUP_INCREMENTAL, "vol.backup.0b5e7a1c-3333-4333-8333-333333333333");
    const otherChain = { ...incr, destination: { pool: "backups", namespace: "", image: "vol.backup.$ID" } };
    otherChain.destination.image = `vol.backup.${incr.backupId}`;
    const onOther = (h: TransferHeader) =>
      signer.sign(
        {
          scope: "transfer",
          job: "j",
          attempt: 1,
          holder: { cluster: "site-a", agentId: "agent-site-a" },
          allows: transferAsks(h, OTHER_FSID),
        },
        60_000,
      );
    const cases: Array<[TransferHeader, string, RegExp]> = [
      [full, onOther(full), /fsid/],
      [restore, onOther(restore), /fsid/],
      // A grant naming only the backup's own chain does not cover an incremental into another chain.
      [incr, mint(otherChain), /chain/],
    ];
    for (const [h, cap, re] of cases) {
      const { messages, seen } = source(h);
      await assert.rejects(authorizeTransfer(verifier, messages, caller(cap), HERE), denied(re));
      assert.equal(seen.read, 1, "only the header was read");
      assert.equal(seen.closed, true);
    }
  });

  it("a backup stream onto an image outside the layout is refused even with a matching-looking grant", async () => {
    const h = header(TransferKind.BACKUP_INCREMENTAL, "production-volume", "rbd");
    const cap = signer.sign(
      {
        scope: "transfer",
        job: "j",
        attempt: 1,
        holder: { cluster: "site-a", agentId: "agent-site-a" },
        allows: {
          purpose: "backup",
          backupId: h.backupId,
          pool: "rbd",
          namespace: "",
          volumeImage: "production-volume",
        },
      },
      60_000,
    );
    const { messages, seen } = source(h);
    await assert.rejects(authorizeTransfer(verifier, messages, caller(cap), HERE), denied(/base image/));
    assert.equal(seen.closed, true);
  });

  it("FAILBACK: allowed by the failback capability the coordinator mints, and by nothing else", async () => {
    const h = { ...header(TransferKind.FAILBACK, "prod", "rbd") };
    h.fromSnapshot = `backup.${h.backupId}.snap.1700000000.5`;
    const target = { pool: "rbd", namespace: "", image: "prod" };
    const coordinatorMint = (mode: RestoreMode, image = "prod", fsid = FSID) =>
      signer.sign(
        {
          scope: "transfer",
          job: "j",
          attempt: 1,
          holder: { cluster: "site-a", agentId: "agent-site-a" },
          allows: restoreJobTransferAllows(h.backupId, { ...target, image }, mode, fsid),
        },
        60_000,
      );
    const ok = source(h);
    const cap = coordinatorMint(RestoreMode.RESTORE_MODE_FAILBACK);
    assert.deepEqual(await drain(await authorizeTransfer(verifier, ok.messages, caller(cap), HERE)), [
      "header",
      "zero",
    ]);
    // A full-copy failback (no from-snapshot) is the same grant.
    const full = { ...h, fromSnapshot: "", transferId: randomUUID() };
    assert.deepEqual(await drain(await authorizeTransfer(verifier, source(full).messages, caller(cap), HERE)), [
      "header",
      "zero",
    ]);
    const cases: Array<[TransferHeader, string, RegExp]> = [
      // A restore's capability onto the same image does not allow a failback, nor the other way round.
      [h, coordinatorMint(RestoreMode.RESTORE_MODE_ORIGINAL), /it allows/],
      [{ ...h, kind: TransferKind.RESTORE_ORIGINAL, fromSnapshot: "" }, cap, /it allows/],
      // Another image; a rollback to a snapshot that is not this backup's.
      [h, coordinatorMint(RestoreMode.RESTORE_MODE_FAILBACK, "other"), /it allows/],
      // A failback capability minted for another cluster.
      [h, coordinatorMint(RestoreMode.RESTORE_MODE_FAILBACK, "prod", OTHER_FSID), /fsid|it allows/],
      [{ ...h, fromSnapshot: "precious-snapshot" }, cap, /only roll back to a snapshot of backup/],
    ];
    for (const [hdr, c, re] of cases) {
      const { messages, seen } = source(hdr);
      await assert.rejects(authorizeTransfer(verifier, messages, caller(c), HERE), denied(re));
      assert.ok(seen.read <= 1, "nothing beyond the header was read");
    }
  });

  it("an operation lease is not a transfer capability", async () => {
    const h = header(TransferKind.RESTORE_NEW, "new-image", "rbd");
    const lease = signer.sign(
      {
        scope: "operation",
        job: "j",
        attempt: 1,
        holder: { cluster: "site-a", agentId: "agent-site-a" },
        allows: transferAsks(h, FSID),
      },
      60_000,
    );
    await assert.rejects(
      authorizeTransfer(verifier, source(h).messages, caller(lease), HERE),
      denied(/not a transfer/),
    );
  });

  it("who: only agents may use the data plane; insecure mode checks nothing", async () => {
    assert.equal(dataPlaneRefusal(caller(undefined)), null);
    for (const id of [
      null,
      { kind: "coordinator", id: "lab" },
      { kind: "client", role: "admin", name: "x" },
    ] as Array<Identity | null>) {
      const r = dataPlaneRefusal(caller(undefined, id));
      assert.equal(r?.status, Status.PERMISSION_DENIED);
      assert.equal(r?.reason, id ? "wrong_kind" : "no_identity");
      assert.match(r?.message ?? "", /only for agents/);
      const h = header(TransferKind.RESTORE_NEW, "x", "rbd");
      await assert.rejects(
        authorizeTransfer(verifier, source(h).messages, caller(mint(h), id), HERE),
        denied(/only for agents/),
      );
    }
    const insecure: TransferCaller = { checked: false, identity: null, capability: undefined };
    assert.equal(dataPlaneRefusal(insecure), null);
    const h = header(TransferKind.RESTORE_NEW, "x", "rbd");
    assert.deepEqual(await drain(await authorizeTransfer(null, source(h).messages, insecure, HERE)), [
      "header",
      "zero",
    ]);
  });

  it("who: an agent whose certificate is revoked is UNAUTHENTICATED, audited, before its capability is looked at", async () => {
    const fp = "ab".repeat(32);
    const revokedCaller: TransferCaller = { ...caller(undefined), revoked: fp };
    const r = dataPlaneRefusal(revokedCaller);
    assert.equal(r?.status, Status.UNAUTHENTICATED);
    assert.equal(r?.reason, "revoked_certificate");
    assert.match(r?.message ?? "", new RegExp(`sha256 ${fp}\\) is revoked`));
    const h = header(TransferKind.RESTORE_NEW, "x", "rbd");
    const lines: Array<{ reason?: string }> = [];
    const audit = { refused: (l: { reason?: string }) => lines.push(l) } as unknown as AuthzAudit;
    const genuine = { ...revokedCaller, capability: mint(h) };
    assert.throws(
      () => admitTransferCaller(verifier, genuine, audit, undefined, HERE),
      (e: { status?: number }) => e.status === Status.UNAUTHENTICATED,
    );
    await assert.rejects(
      authorizeTransfer(verifier, source(h).messages, genuine, HERE, audit),
      (e: { status?: number }) => e.status === Status.UNAUTHENTICATED,
    );
    assert.deepEqual(
      lines.map((l) => l.reason),
      ["revoked_certificate", "revoked_certificate"],
    );
  });

  it("what: a capability signed with a revoked coordinator certificate is refused (revoked_certificate)", () => {
    const h = header(TransferKind.RESTORE_NEW, "x", "rbd");
    const coordFp = new X509Certificate(readFileSync(coord.cert as string)).fingerprint256
      .replaceAll(":", "")
      .toLowerCase();
    const strict = new CapabilityVerifier(readFileSync(coord.ca as string), Date.now, new Set([coordFp]));
    assert.throws(
      () => admitTransferCaller(strict, caller(mint(h)), undefined, undefined, HERE),
      (e: CapabilityError) => e.reason === "revoked_certificate" && /sha256 [0-9a-f]{64}\) is revoked/.test(e.message),
    );
    assert.doesNotThrow(() => admitTransferCaller(verifier, caller(mint(h)), undefined, undefined, HERE));
  });

  describe("ListChains: only with the capability of a backup of that volume into that pool", () => {
    const req = { pool: "backups", namespace: "", volumeImage: "vol-1" };
    const backupCap = (
      over: Partial<Parameters<typeof backupTransferAllows>[0]> = {},
      holder = { cluster: "site-a", agentId: "agent-site-a" },
    ) => {
      const backupId = randomUUID();
      const allows = backupTransferAllows({
        backupId,
        pool: "backups",
        namespace: "",
        volumeImage: "vol-1",
        fsid: FSID,
        chains: [ownChain("vol-1", backupId)],
        ...over,
      });
      return signer.sign({ scope: "transfer", job: "j", attempt: 1, holder, allows }, 60_000);
    };

    it("the backup's own capability, held by the caller: allowed, showing only the chains it names; insecure mode checks nothing", () => {
      const known = `vol-1.backup.${randomUUID()}`;
      const seen = authorizeListChains(verifier, req, caller(backupCap({ chains: [known] })), HERE);
      // Another volume named vol-1 (another cluster's, another pool's) backed up here: not named, not shown.
      assert.deepEqual([...(seen ?? ["everything"])], [known]);
      assert.equal(
        authorizeListChains(null, req, { checked: false, identity: null, capability: undefined }, HERE),
        null,
      );
    });

    it("a same-cluster backup lists its chains itself: the same filter with its own capability (ownVisibleChains)", () => {
      const known = `vol-1.backup.${randomUUID()}`;
      const holder = { cluster: "site-a", agentId: "agent-site-a" };
      const seen = ownVisibleChains(verifier, backupCap({ chains: [known] }), holder, req, FSID);
      assert.deepEqual([...(seen ?? ["everything"])], [known], "a migrated volume's chain of the same name: not seen");
      assert.equal(ownVisibleChains(null, undefined, holder, req, FSID), null, "insecure mode: every chain");
      for (const [what, cap, h, re] of [
        ["none", undefined, holder, /none presented/],
        ["another pool's", backupCap({ pool: "other" }), holder, /pool/],
        ["another holder's", backupCap(), { cluster: "site-b", agentId: "agent-site-b" }, /issued to agent/],
      ] as const) {
        assert.throws(() => ownVisibleChains(verifier, cap, h, req, FSID), /./, what);
        assert.throws(() => ownVisibleChains(verifier, cap, h, req, FSID), re, what);
      }
    });

    it("none, another volume's, pool's, namespace's or cluster's, a restore's, another holder's → PERMISSION_DENIED with its reason", () => {
      const refused: Array<[string, TransferCaller, RegExp]> = [
        ["none", caller(undefined), /none presented/],
        ["another volume", caller(backupCap({ volumeImage: "vol-2" })), /volumeImage/],
        ["another pool", caller(backupCap({ pool: "other" })), /pool/],
        ["another namespace", caller(backupCap({ namespace: "ns" })), /namespace/],
        ["another cluster", caller(backupCap({ fsid: OTHER_FSID })), /fsid/],
        [
          "a restore's",
          caller(
            signer.sign(
              {
                scope: "transfer",
                job: "j",
                attempt: 1,
                holder: { cluster: "site-a", agentId: "agent-site-a" },
                allows: restoreJobTransferAllows(
                  randomUUID(),
                  { pool: "backups", namespace: "", image: "vol-1" },
                  RestoreMode.RESTORE_MODE_NEW,
                  FSID,
                ),
              },
              60_000,
            ),
          ),
          /purpose|volumeImage/,
        ],
        ["another holder's", caller(backupCap({}, siteB)), /issued to agent site-b/],
        ["not an agent", caller(backupCap(), { kind: "coordinator", id: "lab" }), /only for agents/],
      ];
      for (const [what, c, re] of refused) {
        assert.throws(() => authorizeListChains(verifier, req, c, HERE), denied(re), what);
      }
    });
  });

  it("allow_open must be granted: a capability minted without it does not cover a header that asks for it", async () => {
    const h = { ...header(TransferKind.RESTORE_ORIGINAL, "vol-1", "rbd"), allowOpen: true };
    const withoutIt = signer.sign(
      {
        scope: "transfer",
        job: "j",
        attempt: 1,
        holder: { cluster: "site-a", agentId: "agent-site-a" },
        allows: transferAsks({ ...h, allowOpen: false }, FSID),
      },
      60_000,
    );
    await assert.rejects(
      authorizeTransfer(verifier, source(h).messages, caller(withoutIt), HERE),
      denied(/does not cover allowOpen/),
    );
    // The coordinator's own minting for a restore that asked for it covers it.
    const granted = signer.sign(
      {
        scope: "transfer",
        job: "j",
        attempt: 1,
        holder: { cluster: "site-a", agentId: "agent-site-a" },
        allows: restoreJobTransferAllows(
          h.backupId,
          { pool: "rbd", namespace: "", image: "vol-1" },
          RestoreMode.RESTORE_MODE_ORIGINAL,
          FSID,
          true,
        ),
      },
      60_000,
    );
    assert.deepEqual(await drain(await authorizeTransfer(verifier, source(h).messages, caller(granted), HERE)), [
      "header",
      "zero",
    ]);
  });
});
