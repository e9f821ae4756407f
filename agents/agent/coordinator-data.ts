/**
 * The data streams of EXPORT and IMPORT leases, on the session's own channel to the coordinator
 * (same mutual TLS, same "the far end is the coordinator" check): ExportData, a client stream whose
 * first message names the lease, then the export's bytes (nice-grpc waits for `drain` between writes,
 * so a slow coordinator or API caller slows the reads); and ImportData, the ImportBackup caller's
 * bytes as the coordinator relays them, pulled as the parser consumes them. Both end when the lease's
 * signal aborts (cancel, revoke, shutdown).
 */
import { unavailable } from "../../src/common/errors";
import type { CoordinatorAgentServiceClient, ExportDataMessage } from "../../src/gen/rbdbackup/v1/session";

export interface LeaseId {
  jobId: string;
  token: string;
}

export interface CoordinatorData {
  /** Streams `bytes` under the lease; resolves with the bytes the coordinator acknowledged. */
  exportData(lease: LeaseId, bytes: AsyncIterable<Buffer>, signal: AbortSignal): Promise<number>;
  /** The import's bytes under the lease, in order. */
  importData(lease: LeaseId, signal: AbortSignal): AsyncIterable<Uint8Array>;
}

type DataClient = Pick<CoordinatorAgentServiceClient, "exportData" | "importData">;

/** `client()`: the client on the coordinator address the session is on now (null when there is none). */
export function coordinatorData(client: () => DataClient | null): CoordinatorData {
  const current = (): DataClient => {
    const c = client();
    if (!c) throw unavailable("no channel to the coordinator for the lease's data stream");
    return c;
  };
  return {
    async exportData(lease, bytes, signal) {
      async function* messages(): AsyncGenerator<ExportDataMessage> {
        yield { jobId: lease.jobId, token: lease.token, data: new Uint8Array(0) };
        for await (const data of bytes) yield { jobId: "", token: "", data };
      }
      const ack = await current().exportData(messages(), { signal });
      return ack.bytesReceived;
    },
    async *importData(lease, signal) {
      for await (const chunk of current().importData({ jobId: lease.jobId, token: lease.token }, { signal })) {
        yield chunk.data;
      }
    },
  };
}
