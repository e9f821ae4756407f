/**
 * Who may use the data plane, and what one Transfer stream may write (issue 12, least privilege).
 *
 * - Who: the caller's identity comes from its verified TLS client certificate (the data plane
 *   requires one). Only agents of the deployment (rbdbackup://agent/…) may call TransferService at all
 *   (Transfer, ResumePoint, ListChains); anyone else gets PERMISSION_DENIED, and a certificate in this
 *   agent's auth.revokedCertificatesFile UNAUTHENTICATED (data-plane-server.ts and the bulk channel ask
 *   here). A capability signed with a revoked coordinator certificate is refused too (CapabilityVerifier).
 * - What: a Transfer must carry, in the HTTP/2 request header `rbdbackup-capability`, the transfer
 *   capability the coordinator minted for the CALLER (holder = the caller's cluster and agent id), and
 *   the stream's header (its first message) must ask for exactly what the capability allows
 *   (transferAsks: kind, destination pool/namespace/image, backup id, a backup's chain — one of the
 *   base images the capability names —, and this agent's own cluster fsid, so a capability replayed
 *   against another cluster is refused; a backup stream only ever writes a base image named by the
 *   layout). This runs before the sink sees the stream: nothing is created, written or journalled for a
 *   refused stream. The sink checks the header's expected_fsid too (sink/stream-checks.ts).
 *
 * - ListChains reveals which backups of a volume exist: the caller's capability must be the one for a
 *   backup of exactly that volume into exactly that pool and namespace on this cluster (listChainsAsks;
 *   authorizeListChains), so an agent learns the chains only of the volume it is about to back up there.
 *
 * The same-cluster shortcut (the agent's own sink in-process) does not pass here: no network, no
 * foreign caller. Insecure mode (tests only) has no certificates: both checks are off.
 * Every refusal is an audit line and counts in the refusal metric (authz-audit.ts).
 */
import { createHash } from "node:crypto";
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from "node:fs";
import type http2 from "node:http2";
import path from "node:path";
import { checkServerIdentity, type PeerCertificate, type TLSSocket } from "node:tls";
import {
  CAPABILITY_HEADER,
  CapabilityError,
  type CapabilityVerifier,
  checkAllows,
  checkDestinationAgent,
  type Grant,
  listItems,
  unverifiedGrant,
} from "../../src/common/capability";
import { AppError, invalidArgument, Status } from "../../src/common/errors";
import { listChainsAsks, transferAsks } from "../../src/common/grants";
import { describeIdentity, type Identity, identityOfCertificate } from "../../src/common/identity";
import type { Logger } from "../../src/common/log";
import { type Revoked, revokedFingerprint } from "../../src/common/revocations";
import {
  type ListChainsRequest,
  type TransferHeader,
  type TransferMessage,
  transferKindToJSON,
} from "../../src/gen/rbdbackup/v1/transfer";
import { type AuthzAudit, capabilityReason, identityName, TRANSFER_SERVICE } from "./authz-audit";

export const TRANSFER_METHOD = `/${TRANSFER_SERVICE}/Transfer`;
export const RESUME_POINT_METHOD = `/${TRANSFER_SERVICE}/ResumePoint`;
export const LIST_CHAINS_METHOD = `/${TRANSFER_SERVICE}/ListChains`;

/**
 * This agent, as a destination: its cluster's fsid and its agent id. A transfer capability names the
 * destination agent the coordinator chose (`toAgent`), so another agent of the same cluster — which
 * keeps its own spent set — refuses it (as does every agent a capability that names none: minted by a
 * coordinator older than 2026-12-05).
 */
export interface Here {
  fsid: string;
  agentId: string;
}

/** Who is calling the data plane, and the capability it presented. */
export interface TransferCaller {
  /** False in insecure mode: there is no certificate, nothing is checked. */
  checked: boolean;
  identity: Identity | null;
  /** The SHA-256 fingerprint of its certificate when the agent's revocation list names it; else absent or null. */
  revoked?: string | null;
  /**
   * `revoked` as the list says now (the list is reloaded while connections stay open): every judgement
   * asks it again, so a certificate revoked after its stream or connection opened is refused at the
   * header (or request) it sends later.
   */
  revokedNow?: () => string | null;
  capability: string | undefined;
}

/** The identity a verified peer certificate names, and its fingerprint when `revoked` lists it. */
function peerOfCertificate(raw: Buffer, revoked?: Revoked): { identity: Identity | null; revoked: string | null } {
  let identity: Identity | null = null;
  try {
    identity = identityOfCertificate(raw);
  } catch {
    identity = null;
  }
  return { identity, revoked: revokedFingerprint(revoked, raw) };
}

/** The identity in a TLS socket's verified peer certificate, and its fingerprint when `revoked` lists it. */
export function peerOfSocket(
  socket: TLSSocket | undefined,
  revoked?: Revoked,
): { identity: Identity | null; revoked: string | null } {
  let raw: Buffer | undefined;
  try {
    raw = socket?.getPeerCertificate?.(true)?.raw;
  } catch {
    raw = undefined;
  }
  return raw ? peerOfCertificate(raw, revoked) : { identity: null, revoked: null };
}

/**
 * The caller of a data-plane socket as TransferCaller holds it: who, revoked at the handshake, and the
 * list asked again at each later judgement (revokedNow).
 */
export function callerOfSocket(
  socket: TLSSocket | undefined,
  revoked?: Revoked,
): Pick<TransferCaller, "identity" | "revoked" | "revokedNow"> {
  return { ...peerOfSocket(socket, revoked), revokedNow: () => peerOfSocket(socket, revoked).revoked };
}

/** Why a server a source reached is no agent it may send to ("destination"/"peer" names it); null: it may. */
function notAnAgent(
  peer: { identity: Identity | null; revoked: string | null },
  who: "destination" | "peer",
): { status: Status; message: string } | null {
  if (peer.revoked) {
    return {
      status: Status.UNAUTHENTICATED,
      message: `the ${who}'s certificate (sha256 ${peer.revoked}) is revoked (auth.revokedCertificatesFile)`,
    };
  }
  if (peer.identity?.kind === "agent") return null;
  return {
    status: Status.PERMISSION_DENIED,
    message: `the ${who} is not an agent of this deployment (its certificate names ${describeIdentity(peer.identity)})`,
  };
}

/**
 * Where a source may send (the bulk channel: its own TLS connection per transfer): the destination's
 * certificate must name an agent, not be in this agent's revocation list, and — when the transfer
 * capability names the destination agent the coordinator chose (`toAgent`) — name that very agent. So a
 * volume's data never goes to a server that merely holds a certificate of the deployment (another part's,
 * a retired agent's) at the destination's address. PERMISSION_DENIED (UNAUTHENTICATED when revoked);
 * null when it may send.
 */
export function destinationRefusal(
  socket: TLSSocket,
  capability: string | undefined,
  revoked?: Revoked,
): { status: Status; message: string } | null {
  const peer = peerOfSocket(socket, revoked);
  const refusal = notAnAgent(peer, "destination");
  if (refusal) return refusal;
  const id = peer.identity as Extract<Identity, { kind: "agent" }>;
  const to = capability ? unverifiedGrant(capability)?.allows.toAgent : undefined;
  if (to !== undefined && to !== id.agentId) {
    return {
      status: Status.PERMISSION_DENIED,
      message: `the destination is agent ${id.cluster}/${id.agentId}, not agent ${to} the coordinator named`,
    };
  }
  return null;
}

/**
 * A TLS client's server check for the connections to peers that carry no capability of their own — the
 * HTTP/2 connection shared by Transfer calls, the channel of ListChains and ResumePoint: the usual host
 * name check, then "the server is an agent, its certificate not revoked". A refusal fails the handshake.
 */
export function peerServerCheck(revoked?: Revoked): (host: string, cert: PeerCertificate) => Error | undefined {
  return (host, cert) => {
    // Node calls this with no try/catch around it: a throw would take the agent down.
    try {
      const hostError = checkServerIdentity(host, cert);
      if (hostError) return hostError;
      if (!cert.raw) return new Error("the peer presented no certificate");
      const refusal = notAnAgent(peerOfCertificate(cert.raw, revoked), "peer");
      return refusal ? new Error(refusal.message) : undefined;
    } catch (e) {
      return new Error(`the peer's certificate could not be checked: ${(e as Error).message}`);
    }
  };
}

/** The caller of a data-plane stream: the identity in its TLS client certificate, and its capability header. */
export function transferCallerOf(
  stream: http2.ServerHttp2Stream,
  headers: http2.IncomingHttpHeaders,
  insecure: boolean,
  revoked?: Revoked,
): TransferCaller {
  const h = headers[CAPABILITY_HEADER];
  const capability = Array.isArray(h) ? h[0] : h;
  if (insecure) return { checked: false, identity: null, capability };
  return { checked: true, ...callerOfSocket(stream.session?.socket as TLSSocket | undefined, revoked), capability };
}

/** Why a caller may not use the data plane at all: the status, the refusal metric's reason, the message. */
export interface DataPlaneRefusal {
  status: Status;
  reason: "revoked_certificate" | "wrong_kind" | "no_identity";
  message: string;
}

/**
 * Why `caller` may not use TransferService at all; null when it may (an agent whose certificate is not
 * revoked, or insecure mode). A revoked certificate is UNAUTHENTICATED (as at the coordinator), any
 * other caller PERMISSION_DENIED.
 */
export function dataPlaneRefusal(caller: TransferCaller): DataPlaneRefusal | null {
  if (!caller.checked) return null;
  if (caller.revoked) {
    return {
      status: Status.UNAUTHENTICATED,
      reason: "revoked_certificate",
      message: `this certificate (sha256 ${caller.revoked}) is revoked (this agent's auth.revokedCertificatesFile): use a newly issued one`,
    };
  }
  if (caller.identity?.kind === "agent") return null;
  return {
    status: Status.PERMISSION_DENIED,
    reason: caller.identity ? "wrong_kind" : "no_identity",
    message: `TransferService is only for agents of this deployment (the caller is ${describeIdentity(caller.identity)})`,
  };
}

/** Audits a data-plane refusal by `dataPlaneRefusal` (who may not call at all). */
export function auditDataPlaneRefusal(
  audit: AuthzAudit | undefined,
  caller: TransferCaller,
  method: string,
  refusal: DataPlaneRefusal,
  target = "",
) {
  audit?.refused({
    identity: identityName(caller.identity),
    method,
    target,
    reason: refusal.reason,
    message: refusal.message,
    result: Status[refusal.status],
  });
}

/** A header's target for audit lines: "<kind> pool/ns/image backupId=…". */
function headerTarget(h: TransferHeader): string {
  const d = h.destination;
  const where = d ? `${d.pool}/${d.namespace}/${d.image}` : "(no destination)";
  return `${transferKindToJSON(h.kind)} ${where}${h.backupId ? ` backupId=${h.backupId}` : ""}`;
}

/** `first`, then the rest of `it`: the stream as the sink reads it, after its header was looked at. */
function prepend(first: TransferMessage, it: AsyncIterator<TransferMessage>): AsyncIterable<TransferMessage> {
  let given = false;
  const iterator: AsyncIterator<TransferMessage> = {
    next: async () => {
      if (!given) {
        given = true;
        return { done: false, value: first };
      }
      return it.next();
    },
    return: async (v?: unknown) => (it.return ? it.return(v) : { done: true, value: v }),
  };
  return { [Symbol.asyncIterator]: () => iterator };
}

/**
 * The one judgement of a data-plane caller (secure mode): an agent certificate, else PERMISSION_DENIED;
 * a transfer capability that verifies — signed by the deployment, unexpired, issued to this very caller —
 * then `check` on what it grants. Every refusal is audited naming `target` (empty when no message was
 * read) and thrown.
 */
function judge(
  verifier: CapabilityVerifier,
  caller: TransferCaller,
  method: string,
  target: string,
  audit: AuthzAudit | undefined,
  check: (grant: Grant) => void = () => {},
  here?: Here,
): void {
  const id = caller.identity;
  const revokedNow = caller.revokedNow?.();
  const refusal = dataPlaneRefusal(revokedNow ? { ...caller, revoked: revokedNow } : caller);
  if (refusal || id?.kind !== "agent") {
    const r = refusal ?? { status: Status.PERMISSION_DENIED, reason: "no_identity" as const, message: "not an agent" };
    auditDataPlaneRefusal(audit, caller, method, r, target);
    throw new AppError(r.status, r.message);
  }
  try {
    const grant = verifier.verify(caller.capability, "transfer", { cluster: id.cluster, agentId: id.agentId });
    check(grant);
    if (here) checkDestinationAgent(grant, here.agentId);
  } catch (e) {
    if (e instanceof CapabilityError) {
      audit?.refused({ identity: identityName(id), method, target, reason: capabilityReason(e), message: e.message });
    }
    throw e;
  }
}

/**
 * Before a transfer takes one of the destination's slots (data-plane-server.ts `admit`): the caller must
 * be an agent presenting a capability that verifies. What it allows is judged against the header once
 * that comes (authorizeTransfer). So a caller without one is refused at once and cannot hold the slots
 * real transfers need by opening streams and sending nothing. PERMISSION_DENIED (audited, without a
 * target: no message was read); `verifier` null = insecure mode.
 */
export function admitTransferCaller(
  verifier: CapabilityVerifier | null,
  caller: TransferCaller,
  audit?: AuthzAudit,
  method = TRANSFER_METHOD,
  here?: Here,
  spent?: SpentCapabilities,
): void {
  // A capability naming another destination agent does not take a slot here either (one naming none is
  // refused once its header is read, after what it asks for: the more telling reason).
  const notForMe = (grant: Grant) => {
    if (here && grant.allows.toAgent !== undefined) checkDestinationAgent(grant, here.agentId);
  };
  if (!caller.checked || !verifier) return;
  judge(verifier, caller, method, "", audit, notForMe);
  // Nor a Transfer whose capability could not begin (spent, or its stream runs): it would hold a slot
  // until its header came, only to be refused then.
  const why = method === TRANSFER_METHOD ? (spent?.refusal(caller.capability) ?? "") : "";
  if (why) throw capabilityRefused(spent, caller, method, "", why, audit);
}

/**
 * A capability `spent` would not let begin (`why`), audited, as the error to throw: PERMISSION_DENIED
 * (a refusal, counted as bad_capability) when it is spent; UNAVAILABLE (retried; written, not counted as
 * a refusal) while another stream with it still runs — an attempt's next stream (a full backup after a
 * refused incremental) can come before the first one's cleanup ended here.
 */
function capabilityRefused(
  spent: SpentCapabilities | undefined,
  caller: TransferCaller,
  method: string,
  target: string,
  why: string,
  audit: AuthzAudit | undefined,
): AppError {
  const entry = { identity: identityName(caller.identity), method, target, message: why };
  if (spent?.spent(caller.capability)) {
    audit?.refused({ ...entry, reason: "bad_capability" });
    return new AppError(Status.PERMISSION_DENIED, why);
  }
  audit?.record({ ...entry, result: "UNAVAILABLE" });
  return new AppError(Status.UNAVAILABLE, why);
}

/** Makes a rename in `dir` durable. */
function syncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * A spend voids its job's attempts up to its own, at most this many: above any job's attempt count
 * (scheduler.maxAttempts is at most 100, plus the few refunded and extra retries the scheduler adds).
 */
const MAX_ATTEMPTS_VOIDED = 256;

/** The file in the agent's state dir that keeps its spent transfer capabilities across restarts. */
export const SPENT_CAPABILITIES_FILE = "spent-capabilities";

/**
 * Transfer capabilities that have been used by a stream that committed here — or, a restore over the
 * original or a failback, that wrote into the volume before it failed (no cleanup restores what it
 * overwrote: sink/run-sink.ts overwroteTarget): each is good for one such stream. The coordinator mints
 * one per attempt, valid for an hour (scheduler/capabilities.ts) — without this, its holder could replay
 * it after its job ended, e.g. write a restore over a volume a VM has opened since (allow_open), or bring
 * back a deleted backup. A stream refused or failed before it wrote into such a volume, or cut short
 * into an image cleanup removes, leaves it usable for the attempt's next stream (a start over after a
 * refused resume, a failback's full copy after its changes were refused); a resume comes in a later
 * attempt, with a capability of its own. A spend also voids its job's earlier attempts' capabilities
 * (not a later attempt's: a retry of a restore whose outcome was lost writes it again, one cut short
 * after it wrote resumes), and the job's end without a result here — the coordinator's discard_held,
 * sent to every agent of the destination's cluster connected when a job ends CANCELLED or FAILED —
 * voids all of them (`endJob`). Kept as SHA-256 digests until the
 * capability's own expiry; with `file` (the agent's state dir) also on disk, one line
 * "<digest> <until ms>" appended (and fsync'd) per spend, so a restart does not forget them; the file is
 * rewritten without the expired lines when they outnumber the live ones. The capability names this
 * agent (`toAgent`), so no other agent of the cluster takes it either.
 */
export class SpentCapabilities {
  readonly #until = new Map<string, number>();
  /** Capabilities of streams running now: one stream at a time each (a second one is refused). */
  readonly #running = new Set<string>();
  readonly #ttlMs: number;
  readonly #now: () => number;
  readonly #file: string | undefined;
  readonly #log: Logger | undefined;
  /** Lines in the file now (live and expired). */
  #lines = 0;
  /** The file ends without a newline (an append torn by a crash): the next append starts a line first. */
  #torn = false;

  constructor(o: { ttlMs?: number; now?: () => number; file?: string; log?: Logger } = {}) {
    this.#ttlMs = o.ttlMs ?? 3_600_000 + 60_000;
    this.#now = o.now ?? Date.now;
    this.#file = o.file;
    this.#log = o.log;
    if (this.#file) this.#load(this.#file);
  }

  /**
   * A capability's key: the digest of its signed body (the part before the first "."), which the
   * signature covers byte for byte — not of the whole token, whose signature and certificate parts have
   * other encodings that verify just as well (a base64url character's unused low bits, an ECDSA
   * signature's second form), so a spent one re-encoded would have been new.
   */
  static #key(capability: string): string {
    return createHash("sha256")
      .update(capability.split(".", 1)[0] as string)
      .digest("hex");
  }

  /**
   * The job and attempt a capability was minted for, from its grant — read without verifying
   * (unverifiedGrant), for only a capability the verifier accepted reaches a stream; null for one that
   * names none (no grant, or an attempt that is not a positive integer).
   */
  static #jobOf(capability: string): { job: string; attempt: number } | null {
    const g = unverifiedGrant(capability);
    const ok = typeof g?.job === "string" && g.job && Number.isInteger(g.attempt) && g.attempt >= 1;
    return ok && g ? { job: g.job, attempt: g.attempt } : null;
  }

  /** The key of every capability of `jobId` (its end), or of its attempt `attempt` alone. */
  static #jobKey(jobId: string, attempt?: number): string {
    return createHash("sha256")
      .update(attempt === undefined ? `job ${jobId}` : `job ${jobId} attempt ${attempt}`)
      .digest("hex");
  }

  /** The file's unexpired lines; a damaged line is skipped (it can only be a torn last append). */
  #load(file: string): void {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
      throw new Error(`cannot read the spent transfer capabilities in ${file}: ${(e as Error).message}`);
    }
    this.#torn = text.length > 0 && !text.endsWith("\n");
    const now = this.#now();
    for (const line of text.split("\n")) {
      const m = /^([0-9a-f]{64}) ([0-9]{1,16})$/.exec(line);
      if (!m) continue;
      this.#lines++;
      const until = Number(m[2]);
      if (until > now) this.#until.set(m[1] as string, Math.max(until, this.#until.get(m[1] as string) ?? 0));
    }
  }

  /** Appends one spend's keys to the file (fsync'd), or rewrites it without the expired ones. */
  #persist(keys: string[], until: number): void {
    const file = this.#file;
    if (!file) return;
    try {
      if (this.#lines >= 2 * this.#until.size + 64) {
        const tmp = `${file}.tmp`;
        const text = [...this.#until].map(([k, u]) => `${k} ${u}\n`).join("");
        writeFileSync(tmp, text, { mode: 0o600 });
        const fd = openSync(tmp, "r");
        try {
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
        renameSync(tmp, file);
        syncDir(path.dirname(file));
        this.#lines = this.#until.size;
        this.#torn = false;
        return;
      }
      const fd = openSync(file, "a", 0o600);
      try {
        writeSync(fd, `${this.#torn ? "\n" : ""}${keys.map((k) => `${k} ${until}\n`).join("")}`);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      this.#torn = false;
      this.#lines += keys.length;
    } catch (e) {
      // Still refused here until a restart; after one, the capability's own expiry is the bound.
      this.#log?.error("cannot record a spent transfer capability on disk", { file, error: (e as Error).message });
    }
  }

  /**
   * A stream that presented `capability` committed (or wrote into a volume no cleanup restores): it is
   * spent, and so is every capability of its job's earlier attempts — one never used, or cut short
   * before it wrote, would otherwise write again after this attempt's result (a restore over a volume a
   * VM has opened since). A later attempt's is not: the coordinator retries a restore whose outcome it
   * did not hear (the retry writes it again) or that was cut short after it wrote (the retry resumes).
   */
  spend(capability: string | undefined): void {
    if (!capability) return;
    const keys = [SpentCapabilities.#key(capability)];
    const g = SpentCapabilities.#jobOf(capability);
    if (g)
      for (let a = 1; a <= Math.min(g.attempt, MAX_ATTEMPTS_VOIDED); a++)
        keys.push(SpentCapabilities.#jobKey(g.job, a));
    this.#record(keys);
  }

  /**
   * The coordinator ended `jobId` without a result here (CANCELLED, FAILED: its discard_held call): every
   * capability minted for it is refused from now on — a holder that kept one (a source agent taken over,
   * a cancel that came before its stream) cannot write what the job's end undid or never allowed.
   */
  endJob(jobId: string): void {
    if (jobId) this.#record([SpentCapabilities.#jobKey(jobId)]);
  }

  #record(keys: string[]): void {
    const now = this.#now();
    for (const [k, until] of this.#until) if (until <= now) this.#until.delete(k);
    const until = now + this.#ttlMs;
    for (const k of keys) this.#until.set(k, until);
    this.#persist(keys, until);
  }

  #live(key: string): boolean {
    const until = this.#until.get(key);
    return until !== undefined && until > this.#now();
  }

  /** Spent itself, or voided with its job (a commit here of a later attempt, the job's end). */
  spent(capability: string | undefined): boolean {
    if (!capability) return false;
    if (this.#live(SpentCapabilities.#key(capability))) return true;
    const g = SpentCapabilities.#jobOf(capability);
    return (
      g !== null &&
      (this.#live(SpentCapabilities.#jobKey(g.job)) || this.#live(SpentCapabilities.#jobKey(g.job, g.attempt)))
    );
  }

  /**
   * Why a stream presenting `capability` may not start ("" when it may, and it is now running): spent,
   * or another stream with it still running — a holder's second stream, kept alive beside the real one,
   * would otherwise commit after the job ended. An attempt's streams follow one another (a resume
   * refused, then the transfer from the start; AUTO's full after a failed incremental): the first ended
   * (`end`) before its answer reached the source.
   */
  begin(capability: string | undefined): string {
    const why = this.refusal(capability);
    if (!why && capability) this.#running.add(SpentCapabilities.#key(capability));
    return why;
  }

  /** Why a stream presenting `capability` could not begin now ("" when it could); begins nothing. */
  refusal(capability: string | undefined): string {
    if (!capability) return "";
    if (this.spent(capability)) {
      return "this transfer capability was already used here by a stream that committed, or that wrote into a volume no cleanup restores, or a later attempt of its job did, or its job has ended (one such stream each; the coordinator mints one per attempt)";
    }
    if (this.#running.has(SpentCapabilities.#key(capability)))
      return "another stream with this transfer capability is running here (one stream at a time each)";
    return "";
  }

  /** The stream `begin` let start ended; `committed`: the capability is spent. */
  end(capability: string | undefined, committed: boolean): void {
    if (!capability) return;
    this.#running.delete(SpentCapabilities.#key(capability));
    if (committed) this.spend(capability);
  }
}

/**
 * The stream to hand to the sink once the caller's capability allows what its header asks for on this
 * agent's cluster (`fsid`), and `spent` lets it begin (not spent, no other stream with it running: the
 * caller then owes `spent.end`); PERMISSION_DENIED (AppError) otherwise, before anything is written.
 * `verifier` null = insecure mode.
 */
export async function authorizeTransfer(
  verifier: CapabilityVerifier | null,
  messages: AsyncIterable<TransferMessage>,
  caller: TransferCaller,
  here: Here,
  audit?: AuthzAudit,
  spent?: SpentCapabilities,
): Promise<AsyncIterable<TransferMessage>> {
  if (!caller.checked || !verifier) return messages;
  const it = messages[Symbol.asyncIterator]();
  try {
    // The header is read (not judged) first, so that a refusal's audit line names what the stream
    // asked for; the capability is checked before the header's validity, so a caller without the
    // right one learns nothing about it. The sink validates the header in full afterwards
    // (sink/stream-checks.ts readHeader).
    const first = await it.next();
    const header = !first.done && first.value.body?.$case === "header" ? first.value.body.value : null;
    const target = header ? headerTarget(header) : "";
    judge(
      verifier,
      caller,
      TRANSFER_METHOD,
      target,
      audit,
      (grant) => {
        if (!header) throw invalidArgument("the transfer must start with a header");
        checkAllows(grant, transferAsks(header, here.fsid));
      },
      here,
    );
    const why = spent?.begin(caller.capability) ?? "";
    if (why) throw capabilityRefused(spent, caller, TRANSFER_METHOD, target, why, audit);
    return prepend(first.value as TransferMessage, it);
  } catch (e) {
    await it.return?.(undefined).catch(() => {});
    throw e;
  }
}

/**
 * ResumePoint: the caller's capability must allow a Transfer with exactly this header (as
 * authorizeTransfer checks it), so a checkpoint is only shown to whoever may write that image.
 * PERMISSION_DENIED (audited) otherwise; `verifier` null = insecure mode.
 */
export function authorizeResumePoint(
  verifier: CapabilityVerifier | null,
  header: TransferHeader | undefined,
  caller: TransferCaller,
  here: Here,
  audit?: AuthzAudit,
  spent?: SpentCapabilities,
): void {
  if (!caller.checked || !verifier) return;
  const check = (grant: Grant) => {
    if (!header) throw invalidArgument("ResumePointRequest.header is required");
    checkAllows(grant, transferAsks(header, here.fsid));
  };
  const target = header ? headerTarget(header) : "";
  judge(verifier, caller, RESUME_POINT_METHOD, target, audit, check, here);
  // A spent capability (its stream committed, or its job ended) resumes nothing: no attempt with it
  // follows. (One whose stream still runs may ask: the attempt's next stream asks before it starts.)
  if (spent?.spent(caller.capability)) {
    throw capabilityRefused(spent, caller, RESUME_POINT_METHOD, target, spent.refusal(caller.capability), audit);
  }
}

/**
 * The chains a same-cluster backup may see, which its agent lists itself (the local target, no peer's
 * ListChains): as authorizeListChains judges a peer's call — its own capability must be a backup's of
 * exactly this volume into this pool of this cluster, and only the chains it names are seen — so a
 * volume of the same image name elsewhere (another pool's, migrated with `rbd migration`) is never
 * planned onto (the destination would refuse that stream). null = insecure mode (every chain).
 */
export function ownVisibleChains(
  verifier: CapabilityVerifier | null,
  capability: string | undefined,
  holder: { cluster: string; agentId: string },
  req: ListChainsRequest,
  fsid: string,
): ReadonlySet<string> | null {
  if (!verifier) return null;
  const grant = verifier.verify(capability, "transfer", holder);
  checkAllows(grant, listChainsAsks(req, fsid));
  return chainsOf(grant);
}

/** The base images a backup's capability names (its `chain` grant: space-separated). */
const chainsOf = (grant: Grant): ReadonlySet<string> => new Set(listItems(grant.allows.chain ?? ""));

/**
 * ListChains: the caller's capability must be a backup's of exactly this volume into exactly this pool
 * and namespace of this agent's cluster (`fsid`). PERMISSION_DENIED (audited) otherwise, before the
 * cluster is read; `verifier` null = insecure mode.
 */
export function authorizeListChains(
  verifier: CapabilityVerifier | null,
  req: ListChainsRequest,
  caller: TransferCaller,
  here: Here,
  audit?: AuthzAudit,
): ReadonlySet<string> | null {
  if (!caller.checked || !verifier) return null;
  const target = `chains of ${req.pool}/${req.namespace}/${req.volumeImage}`;
  let visible: ReadonlySet<string> = new Set();
  const check = (grant: Grant) => {
    checkAllows(grant, listChainsAsks(req, here.fsid));
    visible = chainsOf(grant);
  };
  judge(verifier, caller, LIST_CHAINS_METHOD, target, audit, check, here);
  return visible;
}
