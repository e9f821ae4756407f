/**
 * Who may call the coordinator. A grpc-js server interceptor (it sees the TLS peer, which nice-grpc
 * handlers do not) admits a call when:
 *  - the client presented a certificate that verified against the deployment's CA (mutual TLS), or
 *  - it carries `authorization: Bearer <token>` with a configured token (API clients only);
 * the agent session (CoordinatorAgentService) always needs the certificate. grpc.health.v1 is open
 * (it tells nothing but SERVING/NOT_SERVING; load balancers probe it). Everything else gets
 * UNAUTHENTICATED before any handler runs. A certificate from another CA is never "verified": the TLS
 * layer requests a certificate but leaves the verdict to this check, so that token-only clients can
 * connect at all.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import {
  Metadata,
  ServerInterceptingCall,
  type ServerInterceptingCallInterface,
  type ServerInterceptor,
  status,
} from "@grpc/grpc-js";

const OPEN_PREFIXES = ["/grpc.health.v1.Health/"];
const CERT_ONLY_PREFIXES = ["/rbdbackup.v1.CoordinatorAgentService/"];

/** Tokens from a file: one per line, "#" comments and blank lines ignored. */
export function readTokens(file: string): string[] {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    throw new Error(`cannot read the API token file ${file}: ${(e as Error).message}`);
  }
  const tokens = text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  for (const t of tokens) if (t.length < 16) throw new Error(`${file}: every API token must be at least 16 characters`);
  return tokens;
}

const digest = (s: string): Buffer => createHash("sha256").update(s).digest();

export interface AuthOptions {
  /** Plaintext server: there is no certificate to check; tokens (if any) are still required. */
  insecure: boolean;
  tokens: string[];
}

export function authInterceptor(opts: AuthOptions): ServerInterceptor {
  const digests = opts.tokens.map(digest);
  const tokenOk = (md: Metadata): boolean => {
    const v = md.get("authorization")[0];
    if (typeof v !== "string" || !v.startsWith("Bearer ")) return false;
    const d = digest(v.slice("Bearer ".length).trim());
    let ok = false;
    for (const t of digests) ok = timingSafeEqual(t, d) || ok;
    return ok;
  };
  return (methodDescriptor, call: ServerInterceptingCallInterface) => {
    const path = methodDescriptor.path;
    return new ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (md, mdNext) => {
            if (OPEN_PREFIXES.some((p) => path.startsWith(p))) return mdNext(md);
            const verifiedCert = opts.insecure || call.getAuthContext()?.sslPeerCertificate !== undefined;
            if (CERT_ONLY_PREFIXES.some((p) => path.startsWith(p))) {
              if (verifiedCert) return mdNext(md);
              return call.sendStatus({
                code: status.UNAUTHENTICATED,
                details: "agents must present a client certificate signed by the deployment's CA",
                metadata: new Metadata(),
              });
            }
            if (verifiedCert && !(opts.insecure && digests.length > 0)) return mdNext(md);
            if (tokenOk(md)) return mdNext(md);
            call.sendStatus({
              code: status.UNAUTHENTICATED,
              details: opts.insecure
                ? "missing or unknown bearer token (metadata authorization: Bearer <token>)"
                : "no credential: present a client certificate signed by the deployment's CA, or a bearer token (metadata authorization: Bearer <token>)",
              metadata: new Metadata(),
            });
          },
        });
      },
    });
  };
}
