/**
 * A fake cluster for the backup phases' control flow (which snapshots are created and removed, what
 * header is sent, what is reported): images with snapshot lists and a fake transfer target that reads
 * the header and answers. No data moves: byte-level backup and restore are tested against real Ceph
 * (test/integration); these fakes never stand in for librbd in such a test.
 */
import { CephError } from "../../../agents/ceph";
import type { EngineContext } from "../../../agents/engine/context";
import { noMeter } from "../../../agents/transfer/meter";
import type { TransferTarget } from "../../../agents/transfer/target";
import { backupSnapName } from "../../../src/common/ids";
import type { Logger } from "../../../src/common/log";
import type {
  Chain,
  ListChainsResponse,
  ResumePointResponse,
  TransferHeader,
  TransferMessage,
  TransferSummary,
} from "../../../src/gen/rbdbackup/v1/transfer";

const ENOENT = 2;

export interface FakeSnap {
  id: number;
  name: string;
  size: number;
  timestamp: number;
  protected: boolean;
  /** Made with the image's watchers asked to quiesce (snapCreate without skipQuiesce). */
  quiesced?: boolean;
}

export class FakeImage {
  snaps: FakeSnap[] = [];
  /** Handles open now, and opened in all. */
  open = 0;
  opened = 0;
  /** Every snapSet of its handles, in order (null: back to the head). */
  moves: Array<string | null> = [];
  #nextId = 1;

  constructor(
    readonly name: string,
    readonly size = 1 << 30,
  ) {}

  addSnap(name: string, quiesced?: boolean): void {
    this.snaps.push({
      id: this.#nextId++,
      name,
      size: this.size,
      timestamp: 0,
      protected: false,
      ...(quiesced === undefined ? {} : { quiesced }),
    });
  }

  handle() {
    this.open++;
    this.opened++;
    const img = this;
    /** The snapshot this handle was moved to (snapSet), null at the head. */
    let at: string | null = null;
    return {
      get label() {
        return at === null ? img.name : `${img.name}@${at}`;
      },
      async stat() {
        const size = at === null ? img.size : (img.snaps.find((s) => s.name === at)?.size ?? 0);
        return { size, features: 61n, order: 22, stripeUnit: 4 << 20, stripeCount: 1 };
      },
      async snapSet(name: string | null) {
        if (name !== null && !img.snaps.some((s) => s.name === name))
          throw new CephError(ENOENT, "rbd_snap_set", `image ${img.name}`, "no such snapshot");
        at = name;
        img.moves.push(name);
      },
      async snapList() {
        return img.snaps.map((s) => ({ ...s }));
      },
      async snapCreate(name: string, opts: { skipQuiesce?: boolean } = {}) {
        img.addSnap(name, !opts.skipQuiesce);
      },
      async snapRemove(name: string) {
        // The engine moves its handle back to the head before removing snapshots.
        if (at !== null) throw new Error(`snapRemove(${name}) on a handle at snapshot ${at}`);
        const i = img.snaps.findIndex((s) => s.name === name);
        if (i < 0) throw new CephError(ENOENT, "rbd_snap_remove", `image ${img.name}`, "no such snapshot");
        img.snaps.splice(i, 1);
      },
      async metaList() {
        return { conf_rbd_cache: "false" };
      },
      async close() {
        img.open--;
      },
    };
  }
}

/** What the fake destination does with a transfer: answer with a summary, or fail. */
export type TransferBehaviour = (header: TransferHeader, n: number) => Promise<TransferSummary>;

export class FakeBackupCluster {
  images = new Map<string, FakeImage>();
  chains: Chain[] = [];
  headers: TransferHeader[] = [];
  /** ListChains questions asked. */
  listed = 0;
  ioOpen = 0;
  /** RADOS objects of the pool "rbd" by name (objRead). */
  objects = new Map<string, Uint8Array>();
  /** Names of the images in the pool's trash (trashList); an Error: listing it fails. */
  trash: string[] | Error = [];
  /** RBD namespaces of the pool (namespaceExists). */
  namespaces = new Set<string>();
  onTransfer: TransferBehaviour = async () => ({ destinationFsid: "fsid-b", warnings: [] }) as never;
  /** What ResumePoint answers (default: no checkpoint). */
  onResumePoint: (h: TransferHeader) => Promise<ResumePointResponse> = async () => ({
    offset: 0,
    prefixDigest: new Uint8Array(0),
    dataChunks: 0,
    dataBytes: 0,
    zeroRanges: 0,
    zeroBytes: 0,
    reason: "no checkpoint of an earlier attempt is kept",
  });

  volume(name: string): FakeImage {
    const img = new FakeImage(name);
    this.images.set(name, img);
    return img;
  }

  /** A chain in the destination pool holding the given backup ids (snapshot names made from them). */
  chain(baseImage: string, backupIds: string[]): string[] {
    const snaps = backupIds.map((id, i) => ({
      name: backupSnapName(id, 1_000_000 + i),
      backupId: id,
      timestamp: 1000 + i,
      snapId: i + 1,
      size: 1 << 30,
    }));
    this.chains.push({ baseImage, snapshots: snaps });
    return snaps.map((s) => s.name);
  }

  context(log: Logger): EngineContext {
    const fc = this;
    const target: TransferTarget = {
      label: "fake peer",
      async listChains(): Promise<ListChainsResponse> {
        fc.listed++;
        return { chains: fc.chains, clusterFsid: "fsid-b" } as ListChainsResponse;
      },
      async resumePoint(header: TransferHeader): Promise<ResumePointResponse> {
        return fc.onResumePoint(header);
      },
      async transfer(messages: AsyncIterable<TransferMessage>): Promise<TransferSummary> {
        const first = await messages[Symbol.asyncIterator]().next();
        const body = (first.value as TransferMessage | undefined)?.body;
        if (body?.$case !== "header") throw new Error("the first message is not the header");
        fc.headers.push(body.value);
        return fc.onTransfer(body.value, fc.headers.length);
      },
    };
    const io = {
      label: "rbd",
      async imageOpen(name: string) {
        const img = fc.images.get(name);
        if (!img) throw new CephError(ENOENT, "rbd_open", `image ${name}`, "no such image");
        return img.handle();
      },
      async namespaceExists(ns: string) {
        return fc.namespaces.has(ns);
      },
      async trashList() {
        if (fc.trash instanceof Error) throw fc.trash;
        return [...fc.trash];
      },
      async objRead(name: string) {
        const o = fc.objects.get(name);
        if (!o) throw new CephError(ENOENT, "rados_read", `object ${name}`, "no such object");
        return Buffer.from(o);
      },
      async close() {
        fc.ioOpen--;
      },
    };
    const cluster = {
      async poolExists(pool: string) {
        return pool === "rbd";
      },
      async openIoCtx() {
        fc.ioOpen++;
        return io;
      },
    };
    return {
      cluster: cluster as unknown as EngineContext["cluster"],
      clusterName: "site-a",
      fsid: "fsid-a",
      log,
      defaultBackupPool: "backups",
      source: { chunkSize: 4 << 20, readsInFlight: 2 },
      meter: noMeter,
      target: () => target,
    };
  }
}
