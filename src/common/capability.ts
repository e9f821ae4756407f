/**
 * Capabilities: what the coordinator allows one agent to do for one job attempt, signed by the
 * coordinator and short-lived. Two scopes:
 *   - "operation": an AgentService call (backup, restore, delete) the callee agent may run — sent as
 *     gRPC metadata `rbdbackup-lease` on direct calls (leases that arrive over the agent's own
 *     authenticated session need none);
 *   - "transfer": one TransferService.Transfer stream the holder (the source agent) may open to a
 *     destination agent, naming exactly what the stream may write — sent as the HTTP/2 header
 *     `rbdbackup-capability`; the coordinator puts it in BackupRequest/RestoreRequest.transfer_capability.
 *
 * Format: base64url(JSON grant) "." base64url(ECDSA/EdDSA signature over the first part) "."
 * base64url(DER of the signer's certificate). The signer is the coordinator's TLS key; a verifier
 * needs only the deployment's CA: the certificate must be issued by it, valid now, and name a
 * coordinator (rbdbackup://coordinator/<id>). Then the signature, the expiry and the holder are checked,
 * and the receiver compares `allows` field by field with what the request asks for (a field the grant
 * does not name is refused, so a grant minted before a field existed never covers a request that asks
 * for it). Every refusal is a CapabilityError: PERMISSION_DENIED with a typed `reason`.
 */
import { createPrivateKey, type KeyObject, sign, verify, X509Certificate } from "node:crypto";
import { AppError, Status } from "./errors";
import { identityOfCertificate } from "./identity";
import { caCertificates, type Revoked, revokedFingerprint } from "./revocations";

export type CapabilityScope = "operation" | "transfer";

export interface Grant {
  v: 1;
  scope: CapabilityScope;
  /** The job and attempt it was minted for (for logs and audit; not checked against anything). */
  job: string;
  attempt: number;
  /** The agent that may present it (operation: the callee; transfer: the source, i.e. the caller). */
  holder: { cluster: string; agentId: string };
  /** What it allows, field by field; the receiver derives the same fields from the request. */
  allows: Record<string, string>;
  /** Issued at and expires at, Unix ms. */
  iat: number;
  exp: number;
}

/** Header/metadata keys that carry capabilities. */
export const LEASE_METADATA_KEY = "rbdbackup-lease";
export const CAPABILITY_HEADER = "rbdbackup-capability";

/** Clock skew tolerated between coordinator and agents, ms. */
const SKEW_MS = 30_000;

const b64 = (b: Buffer | string): string => Buffer.from(b).toString("base64url");

/**
 * Why a capability was refused (the refusal metric's reason label):
 * - no_capability: none was presented;
 * - bad_capability: malformed, expired, of the wrong scope, not signed by the coordinator;
 * - revoked_certificate: signed with a coordinator certificate the verifier's revocation list names;
 * - identity_mismatch: a genuine capability issued to another agent;
 * - not_covered: a genuine capability that does not allow what the request asks.
 */
export type CapabilityRefusalReason =
  | "no_capability"
  | "bad_capability"
  | "revoked_certificate"
  | "identity_mismatch"
  | "not_covered";

/** A refused capability: PERMISSION_DENIED, with why in `reason` (never parse the message). */
export class CapabilityError extends AppError {
  constructor(
    readonly reason: CapabilityRefusalReason,
    why: string,
  ) {
    super(Status.PERMISSION_DENIED, `capability refused: ${why}`);
  }
}

/** A CapabilityError; `reason` defaults to bad_capability (the token itself is wrong). */
export const denied = (why: string, reason: CapabilityRefusalReason = "bad_capability") =>
  new CapabilityError(reason, why);

/**
 * Fields whose granted value is a space-separated list of alternatives: the request's single value
 * must be one of them (a backup's chain: the base images the coordinator knows for that volume). An
 * item's own "%" and " " are written %25 and %20 (listItems / joinListItems) — an image name may hold a
 * space ("my vol"), which split its chain in two; a name with neither reads as before, so agents of an
 * older release still take every capability they took.
 */
export const LIST_FIELDS: ReadonlySet<string> = new Set(["chain"]);

/** A LIST_FIELDS value from its items. */
export function joinListItems(items: Iterable<string>): string {
  return [...items].map((i) => i.replace(/%/g, "%25").replace(/ /g, "%20")).join(" ");
}

/** The items of a LIST_FIELDS value (empty ones left out). */
export function listItems(value: string): string[] {
  return value
    .split(" ")
    .filter(Boolean)
    .map((i) => i.replace(/%20/g, " ").replace(/%25/g, "%"));
}

/** Mints capabilities with the coordinator's certificate and key. */
export class CapabilitySigner {
  readonly #key: KeyObject;
  readonly #certDer: Buffer;

  constructor(
    certPem: string | Buffer,
    keyPem: string | Buffer,
    private readonly now: () => number = Date.now,
  ) {
    const cert = new X509Certificate(certPem);
    const id = identityOfCertificate(cert);
    if (id?.kind !== "coordinator") {
      throw new Error(
        "the coordinator's certificate must name it (subjectAltName URI rbdbackup://coordinator/<id>; see deploy/tls/gen-certs.sh)",
      );
    }
    this.#key = createPrivateKey(keyPem);
    if (!cert.checkPrivateKey(this.#key)) throw new Error("the coordinator's TLS key does not match its certificate");
    this.#certDer = cert.raw;
  }

  sign(g: Omit<Grant, "v" | "iat" | "exp">, ttlMs: number): string {
    const iat = this.now();
    const grant: Grant = { v: 1, ...g, iat, exp: iat + ttlMs };
    const body = b64(JSON.stringify(grant));
    const sig = sign(this.#key.asymmetricKeyType === "ed25519" ? null : "sha256", Buffer.from(body), this.#key);
    return `${body}.${b64(sig)}.${b64(this.#certDer)}`;
  }
}

/** Checks capabilities against the deployment's CA (any CA of the file: an old and a new one during a rotation). */
export class CapabilityVerifier {
  readonly #cas: X509Certificate[];

  constructor(
    caPem: string | Buffer,
    private readonly now: () => number = Date.now,
    /**
     * Certificates revoked by the agent's operator (auth.revokedCertificatesFile): a capability signed
     * with one is refused (revoked_certificate) — a leaked coordinator key mints nothing an agent takes.
     */
    private readonly revoked: Revoked = { has: () => false },
  ) {
    // Every CA the file holds, as TLS trusts them all: a coordinator certificate of the new CA during a
    // rotation is accepted by TLS, and its capabilities must be too.
    this.#cas = caCertificates(caPem);
  }

  /**
   * The grant in `token` when it is genuine, current, of `scope` and held by `holder`; otherwise a
   * PERMISSION_DENIED AppError saying why (never which byte).
   */
  verify(token: string | undefined, scope: CapabilityScope, holder: { cluster: string; agentId: string }): Grant {
    if (!token)
      throw denied(`none presented (a ${scope} capability minted by the coordinator is required)`, "no_capability");
    const parts = token.split(".");
    if (parts.length !== 3 || parts.some((p) => !/^[A-Za-z0-9_-]+$/.test(p))) throw denied("malformed");
    const [body, sig, der] = parts as [string, string, string];
    let cert: X509Certificate;
    try {
      cert = new X509Certificate(Buffer.from(der, "base64url"));
    } catch {
      throw denied("its signer's certificate is malformed");
    }
    const now = this.now();
    // As TLS judges an issuer: a CA certificate (basicConstraints CA), valid now — an expired old CA left
    // in the file after a rotation authorises nothing.
    const issuer = (ca: X509Certificate) =>
      ca.ca &&
      Date.parse(ca.validFrom) <= now + SKEW_MS &&
      Date.parse(ca.validTo) >= now - SKEW_MS &&
      cert.checkIssued(ca) &&
      cert.verify(ca.publicKey);
    if (!this.#cas.some(issuer)) {
      throw denied("not signed by a certificate of this deployment's CA");
    }
    if (Date.parse(cert.validFrom) > now + SKEW_MS || Date.parse(cert.validTo) < now - SKEW_MS) {
      throw denied("its signer's certificate is not valid now");
    }
    if (identityOfCertificate(cert)?.kind !== "coordinator") throw denied("not signed by the coordinator");
    const type = cert.publicKey.asymmetricKeyType;
    const ok = verify(
      type === "ed25519" ? null : "sha256",
      Buffer.from(body),
      cert.publicKey,
      Buffer.from(sig, "base64url"),
    );
    if (!ok) throw denied("bad signature");
    // After the signature: a forgery that merely embeds a revoked certificate is a bad capability, not the
    // leaked key at work.
    const listed = revokedFingerprint(this.revoked, cert.raw);
    if (listed) {
      throw denied(
        `its signer's certificate (sha256 ${listed}) is revoked (auth.revokedCertificatesFile)`,
        "revoked_certificate",
      );
    }
    let g: Grant;
    try {
      g = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as Grant;
    } catch {
      throw denied("malformed grant");
    }
    if (g?.v !== 1 || typeof g.exp !== "number" || typeof g.iat !== "number" || typeof g.allows !== "object") {
      throw denied("malformed grant");
    }
    if (g.scope !== scope) throw denied(`it is a ${g.scope} capability, not a ${scope} capability`);
    if (g.exp < now - SKEW_MS) throw denied(`expired at ${new Date(g.exp).toISOString()}`);
    if (g.iat > now + SKEW_MS) throw denied("issued in the future");
    if (g.holder?.cluster !== holder.cluster || g.holder?.agentId !== holder.agentId) {
      throw denied(
        `it was issued to agent ${g.holder?.cluster}/${g.holder?.agentId}, not to agent ${holder.cluster}/${holder.agentId}`,
        "identity_mismatch",
      );
    }
    return g;
  }
}

/**
 * The grant a capability carries, read WITHOUT verifying it: for its holder, which got it from its own
 * coordinator over an authenticated session, to learn what it names (e.g. the destination agent);
 * null when it is not a capability. Never a substitute for CapabilityVerifier.verify.
 */
export function unverifiedGrant(token: string): Grant | null {
  try {
    const g = JSON.parse(Buffer.from(token.split(".")[0] ?? "", "base64url").toString("utf8")) as Grant;
    return g && typeof g === "object" && typeof g.allows === "object" && g.allows !== null ? g : null;
  } catch {
    return null;
  }
}

/**
 * A transfer capability names the destination agent the coordinator sent its holder to
 * (`allows.toAgent`): any other agent — of the same cluster too — refuses it (not_covered), so the
 * spent set of the agent that took its stream cannot be dodged. One without it, minted by a coordinator
 * older than 2026-12-05, is refused like one without an fsid (upgrade the coordinator first).
 */
export function checkDestinationAgent(g: Grant, agentId: string): void {
  const to = g.allows.toAgent;
  if (to === undefined)
    throw denied("it names no destination agent (minted by an older coordinator: upgrade it)", "not_covered");
  if (to !== agentId) throw denied(`it is for destination agent ${to}, and this is agent ${agentId}`, "not_covered");
}

/**
 * Compares what a grant allows with what the request asks for: every field of `actual` must equal the
 * grant's, or for a LIST_FIELDS field be one of its alternatives (a field the grant does not name is
 * refused: older grants never cover newer fields). PERMISSION_DENIED (not_covered) names the first mismatch.
 */
export function checkAllows(g: Grant, actual: Record<string, string>): void {
  for (const [k, v] of Object.entries(actual)) {
    const allowed = g.allows[k];
    if (typeof allowed !== "string") throw denied(`it does not cover ${k}`, "not_covered");
    const ok = LIST_FIELDS.has(k) ? v !== "" && listItems(allowed).includes(v) : allowed === v;
    if (!ok) throw denied(`it allows ${k}="${allowed}", the request asks for "${v}"`, "not_covered");
  }
}
