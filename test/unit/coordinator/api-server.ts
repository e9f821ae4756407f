/**
 * The public API without Ceph, for the coordinator's unit tests: the real BackupService handlers and
 * error middleware on a gRPC server on 127.0.0.1:0 over `deps` (usually the harness's catalog,
 * sessions and scheduler), a client to it, and the assertions on refused calls they share.
 */
import assert from "node:assert/strict";
import { ChannelCredentials } from "@grpc/grpc-js";
import { type Client, ClientError, createChannel, createClient, createServer } from "nice-grpc";
import { Status } from "nice-grpc-common";
import type { ApiDeps } from "../../../src/coordinator/api/deps";
import { scopeGuard } from "../../../src/coordinator/api/scoped";
import { backupService, errorStatus, withDecodeFailures } from "../../../src/coordinator/api/service";
import { auditCalls } from "../../../src/coordinator/api-audit";
import type { Audit } from "../../../src/coordinator/audit";
import type { ScopeStore } from "../../../src/coordinator/scopes";
import { BackupServiceDefinition } from "../../../src/gen/rbdbackup/v1/backup_service";

export type Api = Client<typeof BackupServiceDefinition>;

export interface ApiServer {
  api: Api;
  close(): Promise<void>;
}

/** `guard`: the audit and scope middlewares in front, as coordinator.ts puts them. */
export async function serveApi(deps: ApiDeps, guard?: { scopes: ScopeStore; audit: Audit }): Promise<ApiServer> {
  const server = createServer();
  if (guard)
    server
      .with(auditCalls(guard.audit))
      .with(errorStatus(deps.log))
      .with(scopeGuard({ ...deps, ...guard }))
      .add(withDecodeFailures(BackupServiceDefinition), backupService(deps));
  else server.with(errorStatus(deps.log)).add(withDecodeFailures(BackupServiceDefinition), backupService(deps));
  const port = await server.listen("127.0.0.1:0");
  const channel = createChannel(`127.0.0.1:${port}`, ChannelCredentials.createInsecure());
  return {
    api: createClient(BackupServiceDefinition, channel),
    async close() {
      channel.close();
      await server.shutdown();
    },
  };
}

/** The API over a harness's catalog, sessions and scheduler (3 attempts per job). */
export function serveHarness(h: Pick<ApiDeps, "catalog" | "sessions" | "scheduler" | "log">): Promise<ApiServer> {
  return serveApi({ catalog: h.catalog, sessions: h.sessions, scheduler: h.scheduler, log: h.log, maxAttempts: 3 });
}

/** Awaits a call that must fail; returns its status and message. */
export async function refused(p: Promise<unknown>): Promise<{ code: Status; details: string }> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ClientError, `expected a gRPC error, got ${e}`);
    return { code: e.code, details: e.details };
  }
  assert.fail("the call succeeded");
}

/** The call fails with exactly `code` and a message matching `message`. */
export async function assertStatus(p: Promise<unknown>, code: Status, message: RegExp): Promise<void> {
  const e = await refused(p);
  assert.equal(Status[e.code], Status[code], e.details);
  assert.match(e.details, message);
}
