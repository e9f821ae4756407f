/**
 * Who may call what on the coordinator: the caller (what the auth interceptor established from the
 * verified certificate or the bearer token) and one table of the roles each BackupService method needs.
 * Agent and coordinator identities have no business on the public API; a certificate without an
 * identity has no business anywhere. A method missing from the table is refused (new methods must be
 * placed in it on purpose). Insecure mode (tests only) has no certificates and skips the checks.
 */
import { Status } from "nice-grpc-common";
import { describeIdentity, type Identity, identityUri, type Role, roleAllows } from "../common/identity";

/** Who is calling, as the interceptor established it. Never taken from what the client sent. */
export type Caller =
  | {
      via: "certificate";
      identity: Identity | null;
      /** SHA-256 of its DER (revocations.ts). */
      fingerprint?: string;
      /** That and its ECDSA twins' (revocations.ts certFingerprints): a revocation of any revokes it. */
      fingerprints?: string[];
    }
  | { via: "token"; role: Role /** The token line's name, when it has one. */; name?: string }
  | { via: "insecure" };

/** Why a call was refused (the label of rbdbackup_authorization_refusals_total; keep it short and fixed). */
export const REFUSAL_REASONS = [
  "no_credential",
  "bad_token",
  "revoked_certificate",
  "no_identity",
  "wrong_role",
  "wrong_kind",
  "identity_mismatch",
  "fsid_mismatch",
  "agent_id_taken",
  "duplicate_session",
  "no_lease",
  "unknown_method",
  "out_of_scope",
] as const;
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

export interface Refusal {
  code: Status;
  reason: RefusalReason;
  message: string;
  /** Who the refused credential names, for the audit line, when the refusal knows (a revoked certificate's identity). */
  who?: string;
}

export const BACKUP_SERVICE = "rbdbackup.v1.BackupService";
export const SESSION_SERVICE = "rbdbackup.v1.CoordinatorAgentService";

/** The weakest role that may call each BackupService method. */
export const METHOD_ROLES: Readonly<Record<string, Role>> = {
  GetBackup: "reader",
  ListBackups: "reader",
  ListBackupSnapshots: "reader",
  GetJob: "reader",
  ListJobs: "reader",
  WatchJob: "reader",
  ListAgents: "reader",
  ForgetAgent: "admin", // frees an agent id for another cluster: as trusted as the agents' own registration
  CheckCluster: "reader",
  ExportBackupRecord: "reader",
  CreateBackup: "operator",
  RestoreBackup: "operator", // any mode, ORIGINAL (over the volume itself) included
  DeleteBackup: "operator",
  CancelJob: "operator",
  ImportBackupRecord: "admin",
  GetPolicy: "reader",
  ListPolicies: "reader",
  GetVolumeProtection: "reader",
  ListVolumeProtection: "reader",
  CreatePolicy: "operator",
  UpdatePolicy: "operator",
  DeletePolicy: "operator",
  PausePolicy: "operator",
  ResumePolicy: "operator",
  RunPolicyNow: "operator",
  FailoverVolume: "operator", // a CLONE restore, and the volume's protection paused
  FailbackVolume: "operator", // a restore over the original volume (rolled back, or copied in full)
  FlattenVolume: "operator", // detaches a CLONE restore's target from its backup
  VerifyBackup: "operator", // re-reads stored data (load on the clusters); may mark a backup CORRUPT
  ExportBackup: "operator", // the volume's data leaves the cluster, as a restore's would
  // The caller's bytes become a backup of the volume it names: an admin's (any volume), or an operator's
  // whose scopes confine it to its own volumes and backup pools (api/scoped.ts ADMIN_UNLESS_SCOPED).
  ImportBackup: "operator",
  RebuildCatalog: "admin", // writes the catalog from what a cluster holds: as trusted as ImportBackupRecord
  GetCoordinatorStatus: "reader",
};

/** Methods that change something: each call is written to the audit log when it ends. */
export const MUTATING = new Set([
  "CreateBackup",
  "RestoreBackup",
  "DeleteBackup",
  "CancelJob",
  "ImportBackupRecord",
  "CreatePolicy",
  "UpdatePolicy",
  "DeletePolicy",
  "PausePolicy",
  "ResumePolicy",
  "RunPolicyNow",
  "FailoverVolume",
  "FailbackVolume",
  "FlattenVolume",
  "VerifyBackup",
  "ExportBackup",
  "ImportBackup",
  "RebuildCatalog",
  "ForgetAgent",
]);

/** Services any API client role may use besides BackupService (read-only). */
const READER_SERVICES = ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/** "/pkg.Service/Method" → ["pkg.Service", "Method"]. */
export function splitPath(path: string): [string, string] {
  const m = /^\/([^/]+)\/([^/]+)$/.exec(path);
  return m ? [m[1] as string, m[2] as string] : ["", path];
}

/** How the audit log and messages name a caller: the identity URI, "token:<role>", … */
export function callerName(c: Caller | null): string {
  if (!c) return "none";
  if (c.via === "token") return c.name ? `token:${c.role}/${c.name}` : `token:${c.role}`;
  if (c.via === "insecure") return "insecure";
  return c.identity ? identityUri(c.identity) : "certificate-without-identity";
}

const denied = (reason: RefusalReason, message: string): Refusal => ({
  code: Status.PERMISSION_DENIED,
  reason,
  message,
});

/** The role an API caller has; a Refusal when it is no API client. */
/** The API role a caller's credential carries: a token's, a client certificate's; null for insecure mode, an
 * agent's or a coordinator's certificate, or none. */
export function roleOf(c: Caller | null): Role | null {
  if (!c || c.via === "insecure") return null;
  if (c.via === "token") return c.role;
  return c.identity?.kind === "client" ? c.identity.role : null;
}

function clientRole(c: Caller, needs: string): Role | Refusal {
  if (c.via === "token") return c.role;
  if (c.via === "insecure") return "admin";
  const id = c.identity;
  if (!id)
    return denied(
      "no_identity",
      `this certificate names no rbdbackup:// identity; ${needs} needs a client certificate`,
    );
  if (id.kind !== "client")
    return denied(
      "wrong_kind",
      `${describeIdentity(id)} may not use the public API; ${needs} needs an API client (client certificate or token)`,
    );
  return id.role;
}

/** Whether `caller` may call the API method `path`; null = allowed. */
export function authorizeApi(path: string, caller: Caller): Refusal | null {
  const [service, method] = splitPath(path);
  let needed: Role | undefined;
  if (service === BACKUP_SERVICE) needed = METHOD_ROLES[method];
  else if (READER_SERVICES.includes(service)) needed = "reader";
  if (!needed) {
    if (caller.via === "insecure") return null;
    return { code: Status.UNIMPLEMENTED, reason: "unknown_method", message: `${path}: no such method` };
  }
  const needs = `${method} needs role ${needed}`;
  const role = clientRole(caller, needs);
  if (typeof role !== "string") return role;
  if (!roleAllows(role, needed))
    return denied("wrong_role", `${callerName(caller)} has role ${role}; ${needs} (or higher)`);
  return null;
}

/** Whether `caller` may open an agent session at all (which agent it may be is checked at Register). */
export function authorizeSession(caller: Caller): Refusal | null {
  if (caller.via === "insecure") return null;
  if (caller.via === "token")
    return {
      code: Status.UNAUTHENTICATED,
      reason: "wrong_kind",
      message: "agents must present a client certificate signed by the deployment's CA (a token is not enough)",
    };
  const id = caller.identity;
  if (!id) return denied("no_identity", "this certificate names no rbdbackup:// identity; a session needs an agent's");
  if (id.kind !== "agent")
    return denied("wrong_kind", `${describeIdentity(id)} may not open an agent session: it needs an agent certificate`);
  return null;
}

/** The agent a Register may claim: exactly the one in the certificate (insecure mode: any). */
export function checkRegistration(caller: Caller, agentId: string, cluster: string): Refusal | null {
  if (caller.via !== "certificate" || caller.identity?.kind !== "agent") return null;
  const id = caller.identity;
  if (id.agentId === agentId && id.cluster === cluster) return null;
  return denied(
    "identity_mismatch",
    `this certificate is agent ${id.agentId} of cluster ${id.cluster}, but the registration claims agent ${agentId} of cluster ${cluster}`,
  );
}

/** The internal metadata key that carries the Caller from the interceptor to the handlers. */
export const CALLER_METADATA_KEY = "x-rbdbackup-internal-caller";

/** The Caller the interceptor put in a call's metadata (handlers); null when none is there. */
export function callerOf(md: { get(key: string): string | undefined | unknown }): Caller | null {
  const v = md.get(CALLER_METADATA_KEY);
  if (typeof v !== "string") return null;
  try {
    return JSON.parse(v) as Caller;
  } catch {
    return null;
  }
}
