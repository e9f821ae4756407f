/**
 * A call the coordinator's auth interceptor refuses PERMISSION_DENIED is answered after its request was
 * read — never handled — so its audit line names the target (src/common/call-identity.ts); one refused
 * UNAUTHENTICATED (no credential) at once, its request never read. A real grpc-js server on loopback,
 * plaintext with a tokens file (the interceptor then requires tokens), no Ceph.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { ChannelCredentials, ServerCredentials } from "@grpc/grpc-js";
import { createChannel, createClient, createServer, Metadata, type Server, Status } from "nice-grpc";
import { Audit } from "../../../src/coordinator/audit";
import { authInterceptor } from "../../../src/coordinator/auth";
import { TokenStore } from "../../../src/coordinator/tokens";
import { BackupServiceDefinition } from "../../../src/gen/rbdbackup/v1/backup_service";
import { memoryLogger } from "./harness";

describe("coordinator: a refused call's audit line names its target", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "rbdbackup-auth-target-"));
  const log = memoryLogger();
  const audit = new Audit(log);
  let server: Server;
  let address = "";
  let handled = 0;
  let close = () => {};

  before(async () => {
    const tokens = path.join(dir, "tokens");
    writeFileSync(tokens, "reader reader-token-0123456789\n", { mode: 0o600 });
    server = createServer({
      // Small, so that a request the server reads beyond it fails RESOURCE_EXHAUSTED.
      "grpc.max_receive_message_length": 1024 * 1024,
      interceptors: [authInterceptor({ insecure: true, tokens: new TokenStore(tokens), audit })],
    });
    // Every method: counts a call that reached it (none may: every call here is refused).
    const handler = async () => {
      handled++;
      throw new Error("a refused call must never reach a handler");
    };
    server.add(BackupServiceDefinition, new Proxy({}, { get: () => handler }) as never);
    address = `127.0.0.1:${await server.listen("127.0.0.1:0", ServerCredentials.createInsecure())}`;
  });
  after(async () => {
    close();
    await server.shutdown();
    audit.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const client = () => {
    const ch = createChannel(address, ChannelCredentials.createInsecure());
    close = () => ch.close();
    return createClient(BackupServiceDefinition, ch);
  };
  const audits = () => log.lines.filter((l) => l.fields?.audit === true).map((l) => l.fields ?? {});

  it("no credential: UNAUTHENTICATED at once, the request never read (not even one past the server's limit); a reader's token on DeleteBackup: PERMISSION_DENIED after it, backup named", async () => {
    const c = client();
    // 2 MiB, past the server's 1 MiB: read, it would fail RESOURCE_EXHAUSTED.
    const big = { backupId: "b-1", idempotencyKey: "k".repeat(2 * 1024 * 1024) };
    await assert.rejects(c.deleteBackup(big), { code: Status.UNAUTHENTICATED });
    const reader = { metadata: Metadata({ authorization: "Bearer reader-token-0123456789" }) };
    await assert.rejects(c.deleteBackup({ backupId: "b-2", idempotencyKey: "" }, reader), {
      code: Status.PERMISSION_DENIED,
    });
    const [a, b, ...rest] = audits();
    assert.deepEqual(rest, []);
    assert.equal(a?.result, "UNAUTHENTICATED");
    assert.equal(a?.target, "", "nothing of an unauthenticated request is read");
    assert.equal(b?.result, "PERMISSION_DENIED");
    assert.equal(b?.identity, "token:reader");
    assert.equal(b?.target, "backup=b-2");
    assert.equal(handled, 0);
  });
});
