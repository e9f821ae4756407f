/**
 * Who is calling the coordinator, and may they. A grpc-js server interceptor (it sees the TLS peer,
 * which nice-grpc handlers do not) establishes the Caller of every call:
 *  - a client certificate that verified against the deployment's CA → its identity (the one
 *    rbdbackup:// subjectAltName URI, src/common/identity.ts; null when it has none), or
 *  - `authorization: Bearer <token>` with a configured token → that token's role (tokens.ts);
 * then asks authz.ts whether that caller may call the method. grpc.health.v1 is open (it tells nothing
 * but SERVING/NOT_SERVING; load balancers probe it). No credential → UNAUTHENTICATED; a credential
 * without the right → PERMISSION_DENIED, before any handler runs; each refusal is audited and counted.
 * A PERMISSION_DENIED is answered once the request was read (never handled) so that the audit line
 * names its target (src/common/call-identity.ts); an UNAUTHENTICATED one at once, its request never read:
 * anyone can connect to the API port, and reading first let callers without any credential make the
 * coordinator hold a message of up to 16 MiB per stream (the session's limit is the server's).
 * The Caller reaches the handlers in an internal metadata key the interceptor always overwrites
 * (authz.ts CALLER_METADATA_KEY), so nothing a client sends can pose as it. A certificate from
 * another CA is never "verified": the TLS layer requests a certificate but leaves the verdict to this
 * check, so that token-only clients can connect at all.
 */
import {
  Metadata,
  ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  status,
} from "@grpc/grpc-js";
import { peerCertificate, refusalListener, refuseAfterRequest } from "../common/call-identity";
import { identityOfCertificate, identityUri, type Role } from "../common/identity";
import { certFingerprints, type Revoked } from "../common/revocations";
import { targetOf } from "./api-audit";
import type { Audit } from "./audit";
import {
  authorizeApi,
  authorizeSession,
  CALLER_METADATA_KEY,
  type Caller,
  callerName,
  type Refusal,
  SESSION_SERVICE,
  splitPath,
} from "./authz";
import type { TokenStore } from "./tokens";

const OPEN_PREFIXES = ["/grpc.health.v1.Health/"];

export interface AuthOptions {
  /** Plaintext server: there is no certificate to check; tokens (if any) are still required. */
  insecure: boolean;
  tokens: TokenStore;
  audit: Audit;
  /** Certificates refused whatever they say (auth.revokedCertificatesFile). */
  revoked?: Revoked;
}

/** The caller a call's credentials make, or the refusal when they make none. */
export function establishCaller(
  opts: { insecure: boolean; tokens: TokenStore; revoked?: Revoked },
  peerCertDer: Buffer | undefined,
  authorization: unknown,
  sessionCall: boolean,
): Caller | Refusal {
  const bearer =
    typeof authorization === "string" && authorization.startsWith("Bearer ")
      ? authorization.slice("Bearer ".length).trim()
      : undefined;
  const unauthenticated = (reason: Refusal["reason"], message: string): Refusal => ({
    code: status.UNAUTHENTICATED as number,
    reason,
    message,
  });
  if (opts.insecure) {
    if (opts.tokens.size === 0 || sessionCall) return { via: "insecure" };
    const entry = bearer !== undefined ? opts.tokens.entryOf(bearer) : null;
    if (entry) return tokenCaller(entry);
    return unauthenticated(
      bearer === undefined ? "no_credential" : "bad_token",
      "missing or unknown bearer token (metadata authorization: Bearer <token>)",
    );
  }
  if (peerCertDer) {
    // Its own fingerprint and its ECDSA twins' (revocations.ts): a listed one of any revokes it.
    const fingerprints = certFingerprints(peerCertDer);
    const fingerprint = fingerprints[0] as string;
    const listed = opts.revoked ? fingerprints.find((fp) => opts.revoked?.has(fp)) : undefined;
    let identity = null;
    try {
      identity = identityOfCertificate(peerCertDer);
    } catch {
      identity = null;
    }
    // Revoked: refused, even with a bearer token beside it (the certificate is who is calling).
    if (listed) {
      return {
        ...unauthenticated(
          "revoked_certificate",
          `this client certificate (sha256 ${listed}) is revoked (auth.revokedCertificatesFile): use a newly issued one`,
        ),
        who: identity ? identityUri(identity) : "no identity",
      };
    }
    return { via: "certificate", identity, fingerprint, fingerprints };
  }
  if (sessionCall)
    return unauthenticated(
      bearer === undefined ? "no_credential" : "wrong_kind",
      "agents must present a client certificate signed by the deployment's CA",
    );
  if (bearer !== undefined) {
    const entry = opts.tokens.entryOf(bearer);
    if (entry) return tokenCaller(entry);
    return unauthenticated(
      "bad_token",
      "unknown bearer token: present a configured token (metadata authorization: Bearer <token>) or a client certificate signed by the deployment's CA",
    );
  }
  return unauthenticated(
    "no_credential",
    "no credential: present a client certificate signed by the deployment's CA, or a bearer token (metadata authorization: Bearer <token>)",
  );
}

const tokenCaller = (e: { role: Role; name: string }): Caller =>
  e.name ? { via: "token", role: e.role, name: e.name } : { via: "token", role: e.role };

export function authInterceptor(opts: AuthOptions): ServerInterceptor {
  return (methodDescriptor, call: ServerInterceptingCallInterface) => {
    const path = methodDescriptor.path;
    const [service] = splitPath(path);
    return new ServerInterceptingCall(call, {
      start: (next) => {
        next({
          ...refusalListener(call),
          onReceiveMetadata: (md, mdNext) => {
            md.remove(CALLER_METADATA_KEY);
            if (OPEN_PREFIXES.some((p) => path.startsWith(p))) return mdNext(md);
            const sessionCall = service === SESSION_SERVICE;
            const established = establishCaller(opts, peerCertificate(call), md.get("authorization")[0], sessionCall);
            const caller = "via" in established ? established : null;
            const refusal =
              "via" in established
                ? sessionCall
                  ? authorizeSession(established)
                  : authorizeApi(path, established)
                : established;
            if (refusal?.code === status.UNAUTHENTICATED) {
              // Nobody known: answered now, nothing of the request read (no target to audit).
              opts.audit.refused(service, {
                identity: refusal.who ?? callerName(null),
                method: path,
                target: "",
                result: status[refusal.code] ?? String(refusal.code),
                reason: refusal.reason,
                message: refusal.message,
              });
              return call.sendStatus({ code: refusal.code, details: refusal.message, metadata: new Metadata() });
            }
            if (refusal) {
              return refuseAfterRequest(call, (request) => {
                opts.audit.refused(service, {
                  identity: refusal.who ?? callerName(caller),
                  method: path,
                  target: targetOf(request),
                  result: status[refusal.code] ?? String(refusal.code),
                  reason: refusal.reason,
                  message: refusal.message,
                });
                return { code: refusal.code, details: refusal.message };
              });
            }
            md.set(CALLER_METADATA_KEY, JSON.stringify(caller));
            mdNext(md);
          },
        });
      },
    });
  };
}
