/**
 * Who is calling: the identity a certificate (or an API token) carries, and the roles of API clients.
 *
 * Every certificate of a deployment names its holder in a subjectAltName URI (deploy/tls/gen-certs.sh
 * issues them):
 *   rbdbackup://agent/<cluster>/<agent-id>    an agent, bound to one cluster and one agent id
 *   rbdbackup://coordinator/<id>              the coordinator
 *   rbdbackup://client/<role>/<name>          an API client; role = admin | operator | reader
 * A certificate signed by the CA without exactly one such URI has no identity and is refused
 * everywhere but health. Tokens carry a role the same way (tokens file: "<role> <token>").
 */
import { X509Certificate } from "node:crypto";
import { memoByDer } from "./der-memo";

export const ROLES = ["reader", "operator", "admin"] as const;
/** API client roles, weakest first: each role may do everything the ones before it may. */
export type Role = (typeof ROLES)[number];

export type Identity =
  | { kind: "agent"; cluster: string; agentId: string }
  | { kind: "coordinator"; id: string }
  | { kind: "client"; role: Role; name: string };

export const URI_PREFIX = "rbdbackup://";

/**
 * The host name a coordinator's certificate names besides its hosts (deploy/tls/gen-certs.sh; no other
 * certificate may): a reserved name that never resolves. A client that can check only host names (grpcio,
 * so the Cinder driver) checks this one and so accepts only a coordinator: every certificate of the
 * deployment names localhost and 127.0.0.1, an agent's too. The TypeScript clients check the URI instead.
 */
export const COORDINATOR_DNS_NAME = "coordinator.rbdbackup.invalid";
const NAME = "[A-Za-z0-9._-]{1,128}";
/**
 * An agent id as an agent may register it: an identity name, or — registered without a certificate
 * identity (insecure mode, a certificate without the URI) — one with ':' or '@' too, e.g. "host:1@site".
 */
export const AGENT_ID_RE = /^[A-Za-z0-9._:@-]{1,128}$/;
export const AGENT_ID_RULE = "1-128 characters of [A-Za-z0-9._:@-]";
const PATTERNS: Array<[RegExp, (m: RegExpExecArray) => Identity]> = [
  [
    new RegExp(`^rbdbackup://agent/(${NAME})/(${NAME})$`),
    (m) => ({ kind: "agent", cluster: m[1] as string, agentId: m[2] as string }),
  ],
  [new RegExp(`^rbdbackup://coordinator/(${NAME})$`), (m) => ({ kind: "coordinator", id: m[1] as string })],
  [
    new RegExp(`^rbdbackup://client/(${ROLES.join("|")})/(${NAME})$`),
    (m) => ({ kind: "client", role: m[1] as Role, name: m[2] as string }),
  ],
];

/** The identity a URI names; null when it is not one of ours or malformed. */
export function parseIdentityUri(uri: string): Identity | null {
  for (const [re, make] of PATTERNS) {
    const m = re.exec(uri);
    if (m) return make(m);
  }
  return null;
}

/** The URI that names `id` (what gen-certs.sh puts in a certificate). */
export function identityUri(id: Identity): string {
  switch (id.kind) {
    case "agent":
      return `${URI_PREFIX}agent/${id.cluster}/${id.agentId}`;
    case "coordinator":
      return `${URI_PREFIX}coordinator/${id.id}`;
    case "client":
      return `${URI_PREFIX}client/${id.role}/${id.name}`;
  }
}

/** "agent site-a/agent-1", "coordinator c1", "client operator/alice": for logs and messages. */
export function describeIdentity(id: Identity | null): string {
  if (!id) return "an identity-less peer";
  switch (id.kind) {
    case "agent":
      return `agent ${id.cluster}/${id.agentId}`;
    case "coordinator":
      return `coordinator ${id.id}`;
    case "client":
      return `client ${id.role}/${id.name}`;
  }
}

/** The URIs of a subjectAltName string as Node prints it ("DNS:a, URI:rbdbackup://…, IP Address:…"). */
export function sanUris(subjectAltName: string | undefined): string[] {
  if (!subjectAltName) return [];
  return subjectAltName
    .split(/,\s*/)
    .filter((e) => e.startsWith("URI:"))
    .map((e) => e.slice("URI:".length));
}

/**
 * The identity in a certificate: exactly one rbdbackup:// URI among its subjectAltNames, well formed;
 * null otherwise (none, several, or a malformed one). The certificate's chain is NOT checked here: the
 * TLS layer verified it against the deployment's CA before this is asked.
 */
export function identityOfSubjectAltName(subjectAltName: string | undefined): Identity | null {
  const ours = sanUris(subjectAltName).filter((u) => u.startsWith(URI_PREFIX));
  if (ours.length !== 1) return null;
  return parseIdentityUri(ours[0] as string);
}

/** Identities of DER certificates already parsed (der-memo.ts: a daemon sees the same few peers on every call). */
const identityOfDer = memoByDer(256, (der) => identityOfSubjectAltName(new X509Certificate(der).subjectAltName));

/** The identity of a DER or PEM certificate (Node's X509Certificate parses it; a Buffer's result is memoized). */
export function identityOfCertificate(cert: Buffer | string | X509Certificate): Identity | null {
  if (!Buffer.isBuffer(cert)) {
    const x = cert instanceof X509Certificate ? cert : new X509Certificate(cert);
    return identityOfSubjectAltName(x.subjectAltName);
  }
  const id = identityOfDer(cert);
  return id ? { ...id } : null;
}

/** Whether `role` includes `needed` (admin ⊇ operator ⊇ reader). */
export function roleAllows(role: Role, needed: Role): boolean {
  return ROLES.indexOf(role) >= ROLES.indexOf(needed);
}

/**
 * Why the server certificate `cert` is not a coordinator's (null when it is: its subjectAltName names
 * rbdbackup://coordinator/<id>). An agent's session and the CLI with the deployment's CA refuse such a
 * server in the handshake: another agent or an API client posing as the coordinator would get the
 * agent's leases or the caller's bearer token.
 */
export function notCoordinator(cert: { raw?: Buffer } | undefined): string | null {
  let id: Identity | null = null;
  try {
    id = cert?.raw ? identityOfCertificate(cert.raw) : null;
  } catch {
    id = null;
  }
  if (id?.kind === "coordinator") return null;
  return `the server's certificate names ${describeIdentity(id)}, not a coordinator (rbdbackup://coordinator/<id>)`;
}
