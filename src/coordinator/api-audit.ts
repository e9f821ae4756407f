/**
 * The audit middleware of the BackupService: every mutating call (authz.ts MUTATING) is written to the
 * audit log when it ends — who, which method, what it was about (the request's volume, backup and job
 * ids) and how it ended (OK or the status name). Refused calls never get here: the auth interceptor
 * audits those. Outermost middleware, so it sees the status the caller gets.
 */
import { type CallContext, type ServerMiddlewareCall, Status } from "nice-grpc-common";
import { messageOf, statusOf } from "../common/errors";
import type { Audit } from "./audit";
import { callerName, callerOf, MUTATING } from "./authz";

interface VolumeLike {
  cluster?: string;
  pool?: string;
  namespace?: string;
  image?: string;
}

const vol = (v: VolumeLike | undefined) =>
  v ? [v.cluster, v.pool, v.namespace, v.image].filter((x) => x !== undefined && x !== "").join("/") : "";

/**
 * The ids a request names, as "policy=… volume=a/rbd/img backup=… job=…" (fields that are empty are left
 * out; a policy is `name`, or `policy.name` in CreatePolicy/UpdatePolicy).
 */
export function targetOf(req: unknown): string {
  const msg = (req ?? {}) as Record<string, unknown>;
  // ImportBackup's first message: { body: { $case: "header", value: ImportBackupHeader } }.
  const body = msg.body as { $case?: string; value?: unknown } | undefined;
  const r = (body?.$case === "header" ? body.value : msg) as Record<string, unknown>;
  const record = (r.record as { backup?: { id?: string; volume?: VolumeLike } } | undefined)?.backup;
  const policy = typeof r.policy === "object" ? (r.policy as { name?: string } | null)?.name : undefined;
  const parts: Array<[string, string]> = [
    ["policy", (typeof r.name === "string" ? r.name : "") || policy || ""],
    ["volume", vol(r.volume as VolumeLike | undefined) || vol(record?.volume)],
    ["location", vol(r.location as VolumeLike | undefined)],
    ["target", vol(r.target as VolumeLike | undefined)],
    ["source", vol(r.source as VolumeLike | undefined)], // FailbackVolume: the failed-over volume
    ["backup", (r.backupId as string | undefined) || record?.id || ""],
    ["job", (r.jobId as string | undefined) ?? ""],
    // RebuildCatalog: the cluster scanned and its pools.
    ["cluster", typeof r.cluster === "string" ? r.cluster : ""],
    ["pools", Array.isArray(r.pools) ? r.pools.join(",") : ""],
  ];
  return parts
    .filter(([, v]) => v)
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}

export function auditCalls(audit: Audit) {
  return async function* auditMiddleware<Req, Res>(call: ServerMiddlewareCall<Req, Res>, context: CallContext) {
    if (!MUTATING.has(call.method.path.split("/").pop() ?? "")) return yield* call.next(call.request, context);
    // A client stream (ImportBackup): its target is its first message's, seen as the handler reads it.
    let first: unknown;
    const request = isAsyncIterable(call.request)
      ? (tapFirst(call.request, (m) => {
          first = m;
        }) as Req)
      : call.request;
    const entry = () => ({
      identity: callerName(callerOf(context.metadata)),
      method: call.method.path,
      target: targetOf(isAsyncIterable(call.request) ? first : call.request),
    });
    try {
      const r = yield* call.next(request, context);
      audit.record({ ...entry(), result: "OK" });
      return r;
    } catch (err) {
      const code = statusOf(err);
      audit.record({ ...entry(), result: Status[code] ?? String(code), message: messageOf(err) });
      throw err;
    }
  };
}

function isAsyncIterable(x: unknown): x is AsyncIterable<unknown> {
  return typeof (x as AsyncIterable<unknown> | null)?.[Symbol.asyncIterator] === "function";
}

/** `it` as it is, telling `seen` its first message. */
async function* tapFirst<T>(it: AsyncIterable<T>, seen: (m: T) => void): AsyncGenerator<T> {
  let n = 0;
  for await (const m of it) {
    if (n++ === 0) seen(m);
    yield m;
  }
}
