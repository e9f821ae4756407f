/**
 * A request message the BackupService cannot decode (src/coordinator/api/undecodable.ts) leaves
 * INVALID_ARGUMENT through errorStatus, not grpc-js's INTERNAL — a unary request before its handler runs,
 * a client stream (ImportBackup) at its first such message, the messages before it read as usual. (A
 * 64-bit number above 2^53 − 1 through a real server: transfer-options.test.ts, policy-api.test.ts.)
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type CallContext, ServerError, type ServerMiddlewareCall, Status } from "nice-grpc-common";
import type { Logger } from "../../../src/common/log";
import { errorStatus } from "../../../src/coordinator/api/error-status";
import { withDecodeFailures } from "../../../src/coordinator/api/undecodable";
import { BackupServiceDefinition, ImportBackupMessage } from "../../../src/gen/rbdbackup/v1/backup_service";

const def = withDecodeFailures(BackupServiceDefinition);
/** Field 1, length-delimited, 127 bytes announced, none there. */
const TRUNCATED = Uint8Array.from([0x0a, 0x7f]);
const quiet = () => {};
const log: Logger = { debug: quiet, info: quiet, warn: quiet, error: quiet, child: () => log };

/** A handler (as nice-grpc's `next`) that runs `body` and answers nothing. */
function handler(body: (req: unknown) => Promise<void> | void) {
  return async function* (req: unknown) {
    await body(req);
    yield* [];
    return {};
  };
}

async function run(call: Partial<ServerMiddlewareCall<unknown, unknown>>): Promise<unknown> {
  const gen = errorStatus(log)(call as ServerMiddlewareCall<unknown, unknown>, {} as CallContext);
  for (;;) {
    const r = await gen.next();
    if (r.done) return r.value;
  }
}

describe("undecodable requests", () => {
  it("the wrapped decoder decodes as before, and marks what it cannot decode instead of throwing", () => {
    const good = ImportBackupMessage.encode({ body: { $case: "data", value: Buffer.from("abc") } }).finish();
    assert.deepEqual(def.methods.importBackup.requestType.decode(good), ImportBackupMessage.decode(good));
    assert.throws(() => ImportBackupMessage.decode(TRUNCATED));
    assert.doesNotThrow(() => def.methods.importBackup.requestType.decode(TRUNCATED));
  });

  it("unary: INVALID_ARGUMENT naming the decoder's complaint, the handler never called", async () => {
    let called = false;
    const request = def.methods.getBackup.requestType.decode(TRUNCATED);
    await assert.rejects(
      run({
        method: { path: "/x/GetBackup", requestStream: false, responseStream: false, options: {} },
        request,
        next: handler(() => {
          called = true;
        }),
      }),
      (e: unknown) =>
        e instanceof ServerError &&
        e.code === Status.INVALID_ARGUMENT &&
        /^the request message could not be decoded \(/.test(e.details),
    );
    assert.equal(called, false);
  });

  it("client stream: the messages before the undecodable one are read, then INVALID_ARGUMENT", async () => {
    const good = def.methods.importBackup.requestType.decode(
      ImportBackupMessage.encode({ body: { $case: "data", value: Buffer.from("abc") } }).finish(),
    );
    const bad = def.methods.importBackup.requestType.decode(TRUNCATED);
    async function* stream() {
      yield good;
      yield bad;
      yield good;
    }
    const read: unknown[] = [];
    await assert.rejects(
      run({
        method: { path: "/x/ImportBackup", requestStream: true, responseStream: false, options: {} },
        request: stream(),
        next: handler(async (req) => {
          for await (const m of req as AsyncIterable<unknown>) read.push(m);
        }),
      }),
      (e: unknown) => e instanceof ServerError && e.code === Status.INVALID_ARGUMENT,
    );
    assert.deepEqual(read, [good]);
  });
});
