/**
 * A connection to one Ceph cluster. `connect()` is the only way in; every wait it can cause is bounded
 * by the timeouts below (librados' own defaults would wait up to 5 minutes for a monitor and forever
 * for an OSD).
 */
import { nativeCall, nativeCallSync } from "./errors";
import { IoCtx } from "./io-ctx";
import { type ClusterStat, type NativeCluster, native } from "./native";
import * as v from "./validate";

export interface ConnectOptions {
  /** Path of the cluster's ceph.conf. */
  conf: string;
  /** Ceph user without the "client." prefix, e.g. "admin" or "rbdbackup". */
  clientId: string;
  /** Keyring path; when absent, the conf's keyring setting is used. */
  keyring?: string;
  /** Seconds to wait for the monitors at connect time (client_mount_timeout). Default 30. */
  connectTimeoutSeconds?: number;
  /** Seconds any single monitor or OSD operation may take (rados_{mon,osd}_op_timeout). Default 60; 0 = forever. */
  opTimeoutSeconds?: number;
  /**
   * Further config overrides, applied last. Defaults set here: rbd_cache=false (data is streamed
   * once; the cache only copies) and rbd_disable_zero_copy_writes=false (write Buffers are kept
   * stable until completion).
   */
  config?: Record<string, string>;
}

export async function connect(opts: ConnectOptions): Promise<Cluster> {
  v.object(opts, "options");
  const conf = v.name(opts.conf, "conf");
  const clientId = v.name(opts.clientId, "clientId", 256);
  if (clientId.startsWith("client.")) throw new RangeError('clientId must not start with "client."');
  const keyring = v.optionalName(opts.keyring, "keyring");
  const connectTimeout = v.uint(opts.connectTimeoutSeconds ?? 30, "connectTimeoutSeconds", 86400);
  const opTimeout = v.uint(opts.opTimeoutSeconds ?? 60, "opTimeoutSeconds", 86400);
  const config: Record<string, string> = {
    // A backup agent streams each byte once: librbd's cache only adds copies and CPU.
    rbd_cache: "false",
    // Our Buffers stay untouched until their aio completes (Image keeps them referenced), so librbd
    // may send them without copying.
    rbd_disable_zero_copy_writes: "false",
    client_mount_timeout: String(connectTimeout),
    rados_mon_op_timeout: String(opTimeout),
    rados_osd_op_timeout: String(opTimeout),
  };
  if (opts.config !== undefined) {
    for (const [k, val] of Object.entries(v.object(opts.config, "config"))) {
      config[v.name(k, "config key", 256)] = v.text(val, `config.${k}`);
    }
  }
  const handle = await nativeCall(`connect to cluster (conf ${conf}, client.${clientId})`, () =>
    native().connect({ conf, clientId, ...(keyring ? { keyring } : {}), config }),
  );
  return new Cluster(handle, conf, clientId);
}

export function libraryVersions(): { librados: string; librbd: string } {
  return native().versions();
}

export class Cluster {
  #h: NativeCluster;
  #closed = false;

  /** @internal use connect() */
  constructor(
    handle: NativeCluster,
    readonly conf: string,
    readonly clientId: string,
  ) {
    this.#h = handle;
  }

  get closed(): boolean {
    return this.#closed;
  }

  fsid(): string {
    return nativeCallSync("cluster fsid", () => this.#h.fsid());
  }

  poolList(): Promise<string[]> {
    return nativeCall("list pools", () => this.#h.poolList());
  }

  poolExists(pool: string): Promise<boolean> {
    v.name(pool, "pool", 256);
    return nativeCall(`look up pool ${pool}`, () => this.#h.poolExists(pool));
  }

  stat(): Promise<ClusterStat> {
    return nativeCall("cluster stat", () => this.#h.clusterStat());
  }

  /**
   * An I/O context on `pool` (+ RADOS namespace). With poolFullTry, ops on a full pool fail with
   * ENOSPC/EDQUOT instead of waiting for space.
   */
  async openIoCtx(pool: string, opts: { namespace?: string; poolFullTry?: boolean } = {}): Promise<IoCtx> {
    v.name(pool, "pool", 256);
    const ns = opts.namespace === undefined ? "" : v.text(opts.namespace, "namespace");
    const fullTry = opts.poolFullTry === undefined ? false : v.bool(opts.poolFullTry, "poolFullTry");
    const label = ns ? `${pool}/${ns}` : pool;
    const h = await nativeCall(`open pool ${label}`, () =>
      this.#h.openIoCtx(pool, { namespace: ns, poolFullTry: fullTry }),
    );
    return new IoCtx(h, pool, ns);
  }

  /**
   * A monitor command, e.g. {prefix: "osd dump", format: "json"}; resolves with its parsed JSON output
   * (or the raw text when it is not JSON).
   */
  async monCommand(command: Record<string, unknown>): Promise<unknown> {
    v.object(command, "command");
    if (typeof command.prefix !== "string" || command.prefix === "")
      throw new TypeError("command.prefix must be a string");
    const r = await nativeCall(`mon command "${command.prefix}"`, () => this.#h.monCommand(JSON.stringify(command)));
    try {
      return JSON.parse(r.output);
    } catch {
      return r.output;
    }
  }

  /** Full/nearfull state of a pool from the OSD map (usage figures need a mgr; these flags do not). */
  async poolFullness(pool: string): Promise<{ full: boolean; nearfull: boolean; clusterFull: boolean }> {
    v.name(pool, "pool", 256);
    const dump = (await this.monCommand({ prefix: "osd dump", format: "json" })) as {
      flags?: string;
      pools?: Array<{ pool_name: string; flags_names?: string }>;
    };
    const p = dump.pools?.find((x) => x.pool_name === pool);
    const flags = (p?.flags_names ?? "").split(",");
    const cflags = (dump.flags ?? "").split(",");
    return {
      full: flags.includes("full") || flags.includes("full_quota"),
      nearfull: flags.includes("nearfull"),
      clusterFull: cflags.includes("full"),
    };
  }

  /** This client's RADOS global id (client.<id>): an image's watcher with this id is this client. */
  instanceId(): number {
    return nativeCallSync("client instance id", () => this.#h.instanceId());
  }

  /** This client's address(es) as the cluster sees them, e.g. "[v2:127.0.0.1:0/1234]". */
  addrs(): string {
    return nativeCallSync("client addresses", () => this.#h.addrs());
  }

  /**
   * Blocklists a client address: its watches and locks are dropped at once and its I/O refused. For
   * a predecessor process that died holding an image's exclusive lock.
   */
  blocklistAdd(address: string, expireSeconds: number): Promise<void> {
    v.name(address, "address", 256);
    v.positiveInt(expireSeconds, "expireSeconds", 2 ** 31);
    return nativeCall(`blocklist ${address}`, () => this.#h.blocklistAdd(address, expireSeconds));
  }

  /** Idempotent. The connection shuts down once its I/O contexts and images are closed too. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await nativeCall("close cluster connection", () => this.#h.close());
  }
}
