/**
 * Following the leader among several coordinators (`--coordinator a,b,c`): one channel per address,
 * opened when first used, and a BackupServiceClient whose calls go to the address in force and move on
 * when a coordinator cannot take them.
 *
 * When a unary call fails UNAVAILABLE:
 *  - with the trailer `rbdbackup-leader` (a standby refused it without acting, or a deposed leader whose
 *    write was fenced): the same call goes to the named leader — mutating calls included;
 *  - without it (connection failure, a coordinator stopping): a read (READS) goes to the next address;
 *    a mutating call does not — it may have been carried out — and fails as before. To keep "could not
 *    connect" apart from "lost mid-call", with several addresses a mutating call is sent only once the
 *    channel is READY; an address that cannot be reached is skipped before anything is sent.
 * Streaming calls (WatchJob, ExportBackup, ImportBackup) are not re-sent here; their UNAVAILABLE moves the
 * address in force, so the caller's own retry (the watch loop's) goes to the leader.
 * With one address every call goes there, exactly as before.
 */
import { connectivityState as ConnectivityState } from "@grpc/grpc-js";
import { type Channel, ClientError, type Metadata, Status } from "nice-grpc";
import { type BackupServiceClient, BackupServiceDefinition } from "../gen/rbdbackup/v1/backup_service";

export const LEADER_TRAILER = "rbdbackup-leader";

/** BackupService methods that only read: safe to send again to another coordinator. */
export const READS: ReadonlySet<string> = new Set([
  "GetBackup",
  "ListBackups",
  "ListBackupSnapshots",
  "GetJob",
  "ListJobs",
  "WatchJob",
  "ListAgents",
  "CheckCluster",
  "ExportBackupRecord",
  "GetPolicy",
  "ListPolicies",
  "GetVolumeProtection",
  "ListVolumeProtection",
  "GetCoordinatorStatus",
]);

/** How long a mutating call waits for its channel to connect before the next address is tried. */
const CONNECT_MS = 5_000;

interface Endpoint {
  channel: Channel;
  client: BackupServiceClient;
}

type Options = { signal?: AbortSignal; onTrailer?: (md: Metadata) => void } & Record<string, unknown>;
// biome-ignore lint/suspicious/noExplicitAny: the client's methods differ only in their message types
type AnyMethod = (request: any, options?: Options) => any;

/** Resolves true once `channel` is READY, false when it fails to connect or by `deadline`. */
export function whenReady(channel: Channel, deadline: number): Promise<boolean> {
  return new Promise((resolve) => {
    const check = () => {
      const state = channel.getConnectivityState(true);
      if (state === ConnectivityState.READY) return resolve(true);
      if (state === ConnectivityState.TRANSIENT_FAILURE || state === ConnectivityState.SHUTDOWN) return resolve(false);
      if (Date.now() >= deadline) return resolve(false);
      channel.watchConnectivityState(state, deadline, (err) => (err ? resolve(false) : check()));
    };
    check();
  });
}

export class LeaderFollower {
  readonly client: BackupServiceClient;
  readonly #endpoints = new Map<string, Endpoint>();
  #address: string;

  constructor(
    readonly addresses: readonly string[],
    private readonly open: (address: string) => Endpoint,
  ) {
    if (addresses.length === 0) throw new Error("no coordinator address");
    this.#address = addresses[0] as string;
    const client: Record<string, AnyMethod> = {};
    for (const [key, m] of Object.entries(BackupServiceDefinition.methods)) {
      client[key] =
        m.requestStream || m.responseStream
          ? (req, o) => this.#stream(key, req, o)
          : (req, o) => this.#unary(key, m.name, req, o);
    }
    this.client = client as unknown as BackupServiceClient;
  }

  /** The address calls go to now. */
  get address(): string {
    return this.#address;
  }

  #endpoint(address: string): Endpoint {
    let e = this.#endpoints.get(address);
    if (!e) {
      e = this.open(address);
      this.#endpoints.set(address, e);
    }
    return e;
  }

  #next(after: string, tried: Set<string>): string | undefined {
    const i = this.addresses.indexOf(after);
    for (let k = 1; k <= this.addresses.length; k++) {
      const a = this.addresses[(i + k) % this.addresses.length] as string;
      if (!tried.has(a)) return a;
    }
    return undefined;
  }

  async #unary(key: string, name: string, request: unknown, options: Options = {}): Promise<unknown> {
    const read = READS.has(name);
    const several = this.addresses.length > 1;
    const tried = new Set<string>();
    let lastError: unknown;
    for (let hops = 0; hops <= this.addresses.length + 2; hops++) {
      const address = this.#address;
      const { channel, client } = this.#endpoint(address);
      if (!read && several && !(await whenReady(channel, Date.now() + CONNECT_MS))) {
        tried.add(address);
        lastError = new ClientError(
          `/${BackupServiceDefinition.fullName}/${name}`,
          Status.UNAVAILABLE,
          `cannot connect to the coordinator at ${address}`,
        );
        const next = this.#next(address, tried);
        if (!next) break;
        this.#address = next;
        continue;
      }
      let leader: string | undefined;
      const onTrailer = (md: Metadata) => {
        leader = md.get(LEADER_TRAILER) || undefined;
        options.onTrailer?.(md);
      };
      try {
        return await (client as unknown as Record<string, AnyMethod>)[key]?.(request, { ...options, onTrailer });
      } catch (e) {
        if (!(e instanceof ClientError) || e.code !== Status.UNAVAILABLE || options.signal?.aborted) throw e;
        lastError = e;
        tried.add(address);
        if (leader && leader !== address) {
          this.#address = leader; // refused without acting: the same call, to the leader
          continue;
        }
        const next = read && several ? this.#next(address, tried) : undefined;
        if (!next) throw e;
        this.#address = next;
      }
    }
    throw lastError;
  }

  #stream(key: string, request: unknown, options: Options = {}): AsyncIterable<unknown> | Promise<unknown> {
    const address = this.#address;
    let leader: string | undefined;
    const onTrailer = (md: Metadata) => {
      leader = md.get(LEADER_TRAILER) || undefined;
      options.onTrailer?.(md);
    };
    const moveOn = (e: unknown) => {
      if (e instanceof ClientError && e.code === Status.UNAVAILABLE && this.#address === address) {
        this.#address = leader ?? this.#next(address, new Set([address])) ?? address;
      }
      return e;
    };
    const result = (this.#endpoint(address).client as unknown as Record<string, AnyMethod>)[key]?.(request, {
      ...options,
      onTrailer,
    });
    if (result && typeof result.then === "function") return result.catch((e: unknown) => Promise.reject(moveOn(e)));
    return (async function* () {
      try {
        yield* result as AsyncIterable<unknown>;
      } catch (e) {
        throw moveOn(e);
      }
    })();
  }

  close(): void {
    for (const e of this.#endpoints.values()) e.channel.close();
    this.#endpoints.clear();
  }
}
