/** SinkDeps for unit tests: a fake cluster, an in-memory journal, a counting meter, a quiet logger that keeps what it was told. */

import { noMeter, type TransferMeter } from "../../../../agents/transfer/meter";
import type { SinkCluster, SinkDeps } from "../../../../agents/transfer/sink";
import type { Logger } from "../../../../src/common/log";
import { crc32c } from "./crc32c";
import type { FakeCeph } from "./fake-ceph";
import { MemoryJournal } from "./memory-journal";

export interface LogLine {
  level: string;
  msg: string;
  fields?: Record<string, unknown>;
}

export function quietLogger(lines: LogLine[] = []): Logger {
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => {
    lines.push({ level, msg, ...(fields ? { fields } : {}) });
  };
  const l: Logger = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error"), child: () => l };
  return l;
}

export interface TestDeps extends SinkDeps<SinkCluster> {
  cluster: FakeCeph;
  journal: MemoryJournal;
  counts: { checksumFailures: number; written: number; receiving: string[] };
  lines: LogLine[];
}

export function sinkDeps(ceph: FakeCeph, over: Partial<SinkDeps<SinkCluster>> = {}): TestDeps {
  const counts = { checksumFailures: 0, written: 0, receiving: [] as string[] };
  const meter: TransferMeter = {
    ...noMeter,
    checksumFailure: () => counts.checksumFailures++,
    receiving: (pool) => counts.receiving.push(pool),
    written: (_pool, bytes) => {
      counts.written += bytes;
    },
  };
  const lines: LogLine[] = [];
  return {
    cluster: ceph,
    meter,
    clientAddr: "10.0.0.1:0/1",
    clusterName: "site-b",
    fsid: "fsid-b",
    journal: new MemoryJournal(),
    log: quietLogger(lines),
    limits: { writesInFlight: 3, windowBytes: 1 << 20, fullCheckIntervalMs: 60_000 },
    checksum: crc32c,
    ...over,
    counts,
    lines,
  } as TestDeps;
}
