/**
 * The bench's lab trim (test/bench/lab-trim.ts) against a fake OSD admin socket on a Unix socket: the
 * protocol (JSON + NUL out; 4-byte big-endian length and JSON back), the count of PGs still trimming
 * (a non-empty snap_trimq or a snaptrim state), and the bounds: a silent socket times out, a short reply
 * is an error.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { adminSocket, trimmingPgs } from "../../bench/lab-trim";

type Reply = (cmd: Record<string, unknown>) => Buffer | null;

function frame(value: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(value));
  const len = Buffer.alloc(4);
  len.writeUInt32BE(body.length);
  return Buffer.concat([len, body]);
}

describe("bench lab trim: the OSD admin socket", () => {
  let dir = "";
  let server: Server;
  let sock = "";
  let reply: Reply = () => null;
  const seen: Array<Record<string, unknown>> = [];

  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "lab-trim-"));
    sock = path.join(dir, "osd.0.asok");
    server = createServer((s) => {
      let buf = Buffer.alloc(0);
      s.on("data", (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        const nul = buf.indexOf(0);
        if (nul < 0) return;
        const cmd = JSON.parse(buf.subarray(0, nul).toString()) as Record<string, unknown>;
        seen.push(cmd);
        const r = reply(cmd);
        if (r) s.end(r); // null: never answers
      });
      s.on("error", () => {});
    });
    await new Promise<void>((r) => server.listen(sock, r));
  });

  after(async () => {
    await new Promise<void>((r) => server.close(() => r()));
    rmSync(dir, { recursive: true, force: true });
  });

  it("sends the command as JSON with a NUL and reads the length-prefixed reply", async () => {
    reply = (cmd) => frame({ echoed: cmd.prefix, n: 7 });
    assert.deepEqual(await adminSocket(sock, { prefix: "status" }), { echoed: "status", n: 7 });
    assert.deepEqual(seen.at(-1), { prefix: "status" });
  });

  it("counts the PGs still trimming: a queue left or a snaptrim state", async () => {
    const pgs: Record<string, { state: string; snap_trimq_len: number }> = {
      "1.0": { state: "active+clean", snap_trimq_len: 0 },
      "1.1": { state: "active+clean+snaptrim", snap_trimq_len: 1 },
      "2.0": { state: "active+clean+snaptrim_wait", snap_trimq_len: 0 },
      "2.1": { state: "active+clean", snap_trimq_len: 3 },
    };
    reply = (cmd) =>
      cmd.prefix === "dump_pgstate_history"
        ? frame({ pgs: Object.keys(pgs).map((pg) => ({ pg, currently: "Started/Primary/Active/Clean" })) })
        : frame(pgs[cmd.pgid as string]);
    assert.equal(await trimmingPgs(sock), 3);
    for (const pg of Object.values(pgs)) Object.assign(pg, { state: "active+clean", snap_trimq_len: 0 });
    assert.equal(await trimmingPgs(sock), 0);
    assert.ok(
      seen.some((c) => c.prefix === "query" && c.pgid === "2.1"),
      "each PG is queried by its id",
    );
  });

  it("a socket that never answers times out; a reply shorter than its length prefix is an error", async () => {
    reply = () => null;
    await assert.rejects(adminSocket(sock, { prefix: "status" }, 100), /no answer in 100 ms/);
    reply = () => Buffer.from([0, 0]);
    await assert.rejects(adminSocket(sock, { prefix: "status" }), /short reply to status/);
  });
});
