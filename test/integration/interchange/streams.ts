/**
 * Test helpers for rbd-diff streams: `rbd export-diff` / `rbd export --export-format 2` / `rbd
 * import-diff` / `rbd import --export-format 2` on the lab, the diff v2 streams inside an image v2
 * export (split by their record lengths), an image v2 container around one of ours, and the codec's
 * round trip (parse, re-write: the same bytes).
 */
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";
import { type DiffRecord, parseRbdDiff } from "../../../agents/transfer/rbd-diff/parser";
import { RbdDiffWriter } from "../../../agents/transfer/rbd-diff/writer";
import { labCluster } from "../../helpers/lab";

const execFileP = promisify(execFile);

/** Runs `rbd <command> --no-progress <args…>` on a lab cluster (bounded). */
export async function rbdCli(cluster: string, args: string[]): Promise<string> {
  const c = labCluster(cluster);
  const [command, ...rest] = args;
  const { stdout } = await execFileP("rbd", ["-c", c.conf, command as string, "--no-progress", ...rest], {
    timeout: 180_000,
    maxBuffer: 64 << 20,
  });
  return stdout;
}

export async function* fileChunks(path: string, piece = 100_003): AsyncGenerator<Buffer> {
  const b = await readFile(path);
  for (let i = 0; i < b.length; i += piece) yield b.subarray(i, i + piece);
}

export async function* bufferChunks(b: Buffer, piece = 65_521): AsyncGenerator<Buffer> {
  for (let i = 0; i < b.length; i += piece) yield b.subarray(i, i + piece);
}

/** The diff v2 streams of an `rbd export --export-format 2` file (creation→snap1, …, snapN→head). */
export function splitImageV2(b: Buffer): Buffer[] {
  const banner = Buffer.from("rbd image v2\n");
  if (!b.subarray(0, banner.length).equals(banner)) throw new Error("not an image v2 export");
  let pos = banner.length;
  while (b[pos] !== 0x45 /* 'E' */) pos += 9 + Number(b.readBigUInt64LE(pos + 1));
  pos += 1;
  const diffs = Buffer.from("rbd image diffs v2\n");
  if (!b.subarray(pos, pos + diffs.length).equals(diffs)) throw new Error("no diffs banner");
  pos += diffs.length;
  const count = Number(b.readBigUInt64LE(pos));
  pos += 8;
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const start = pos;
    pos += 12;
    // 'p' declares 8 bytes but carries 1 (agents/transfer/rbd-diff/format.ts).
    while (b[pos] !== 0x65 /* 'e' */) pos += 9 + (b[pos] === 0x70 ? 1 : Number(b.readBigUInt64LE(pos + 1)));
    pos += 1;
    out.push(b.subarray(start, pos));
  }
  return out;
}

/** An image v2 container holding one diff v2 stream (creation→`t`), for `rbd import --export-format 2`. */
export function imageV2Around(diff: Buffer, order = 22): Buffer {
  const rec = (tag: string, v: bigint) => {
    const r = Buffer.alloc(17);
    r.write(tag, 0, "latin1");
    r.writeBigUInt64LE(8n, 1);
    r.writeBigUInt64LE(v, 9);
    return r;
  };
  const count = Buffer.alloc(8);
  count.writeBigUInt64LE(1n);
  return Buffer.concat([
    Buffer.from("rbd image v2\n"),
    rec("O", BigInt(order)),
    rec("T", 1n),
    rec("U", BigInt(1 << order)),
    rec("C", 1n),
    Buffer.from("E"),
    Buffer.from("rbd image diffs v2\n"),
    count,
    diff,
  ]);
}

export async function records(b: Buffer): Promise<DiffRecord[]> {
  const out: DiffRecord[] = [];
  for await (const r of parseRbdDiff(bufferChunks(b), { maxPiece: 1 << 20 })) out.push(r);
  return out;
}

/** Parses `b` and writes its records back with our writer (one 'w' per record, pieces joined). */
export async function rewrite(b: Buffer): Promise<Buffer> {
  const rs = await records(b);
  const version = rs[0]?.type === "banner" ? rs[0].version : 1;
  const w = new RbdDiffWriter(version);
  const out: Buffer[] = [];
  const meta: { from?: string; to?: string; prot?: boolean } = {};
  type Pending = { offset: number; at: number; bufs: Buffer[] };
  let pending: Pending | null = null;
  const flush = () => {
    if (pending) out.push(...w.data(pending.offset, Buffer.concat(pending.bufs)));
    pending = null;
  };
  for (const r of rs) {
    if (r.type !== "data") flush();
    if (r.type === "from") meta.from = r.name;
    else if (r.type === "to") meta.to = r.name;
    else if (r.type === "protect") meta.prot = r.value;
    else if (r.type === "size")
      out.push(
        ...w.begin({
          ...(meta.from ? { fromSnapshot: meta.from } : {}),
          ...(meta.to ? { toSnapshot: meta.to } : {}),
          size: r.size,
          ...(meta.prot ? { isProtected: true } : {}),
        }),
      );
    else if (r.type === "zero") out.push(...w.zero(r.offset, r.length));
    else if (r.type === "end") out.push(...w.end());
    else if (r.type === "data") {
      const p = pending as Pending | null;
      if (p?.at === r.at) p.bufs.push(r.data);
      else {
        flush();
        pending = { offset: r.offset, at: r.at, bufs: [r.data] };
      }
    }
  }
  return Buffer.concat(out);
}
