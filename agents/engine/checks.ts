/**
 * Prerequisites of a cluster as this agent sees them (the Cinder driver's check_for_setup_error,
 * plus what it never checked): libraries, conf, keyring, connection, backup pool, and whether a base
 * image with the features incremental backups rely on can be created there. One entry per piece,
 * each with what to do when it fails.
 */
import { access, constants } from "node:fs/promises";
import type { Check } from "../../src/gen/rbdbackup/v1/agent";
import { type Cluster, isCephError, libraryVersions, RbdFeature } from "../ceph";

export interface CheckInputs {
  conf: string;
  keyring?: string;
  clientId: string;
  backupPool: string;
}

async function readable(path: string): Promise<string | null> {
  try {
    await access(path, constants.R_OK);
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

/** Checks that need no connection (run before connecting, so a bad setup gets a precise message). */
export async function localChecks(inp: CheckInputs): Promise<Check[]> {
  const out: Check[] = [];
  try {
    const v = libraryVersions();
    out.push({ name: "libraries", ok: true, message: `librados ${v.librados}, librbd ${v.librbd}` });
  } catch (e) {
    out.push({
      name: "libraries",
      ok: false,
      message: `the native addon or librados/librbd cannot be loaded: ${(e as Error).message}`,
    });
  }
  const confErr = await readable(inp.conf);
  out.push({
    name: "conf",
    ok: !confErr,
    message: confErr ? `cannot read the Ceph conf ${inp.conf}: ${confErr}` : inp.conf,
  });
  out.push({
    name: "user",
    ok: inp.clientId !== "",
    message: inp.clientId ? `client.${inp.clientId}` : "no Ceph user configured (cluster.clientId)",
  });
  if (inp.keyring) {
    const kErr = await readable(inp.keyring);
    out.push({
      name: "keyring",
      ok: !kErr,
      message: kErr ? `cannot read the keyring ${inp.keyring}: ${kErr}` : inp.keyring,
    });
  } else {
    out.push({ name: "keyring", ok: true, message: "from the conf's keyring setting" });
  }
  out.push({
    name: "backup-pool-set",
    ok: inp.backupPool !== "",
    message: inp.backupPool ? inp.backupPool : "no backup pool configured (backupPool)",
  });
  return out;
}

/** Checks whose failure does not stop an agent from starting (it can still restore and delete). */
export const ADVISORY_CHECKS = new Set(["backup-pool-space"]);

/** Checks against the connected cluster. */
export async function clusterChecks(cluster: Cluster, backupPool: string): Promise<Check[]> {
  const out: Check[] = [{ name: "connect", ok: true, message: `connected, fsid ${cluster.fsid()}` }];
  if (!(await cluster.poolExists(backupPool))) {
    out.push({
      name: "backup-pool",
      ok: false,
      message: `pool ${backupPool} does not exist: create it and run "rbd pool init ${backupPool}"`,
    });
    return out;
  }
  out.push({ name: "backup-pool", ok: true, message: `pool ${backupPool} exists` });
  const full = await cluster.poolFullness(backupPool).catch(() => null);
  const isFull = !!full && (full.full || full.clusterFull);
  out.push({
    name: "backup-pool-space",
    ok: !!full && !isFull,
    message: !full
      ? "could not read the OSD map"
      : isFull
        ? `pool ${backupPool} is full: backups into it fail until space is freed (delete backups, or add capacity)`
        : full.nearfull
          ? `pool ${backupPool} is nearly full`
          : `pool ${backupPool} has space`,
  });
  if (isFull) {
    out.push({ name: "image-features", ok: true, message: "not probed: the pool is full" });
    return out;
  }
  const io = await cluster.openIoCtx(backupPool);
  const probe = `rbdbackup-check-${process.pid}-${Date.now()}`;
  try {
    const features =
      RbdFeature.layering |
      RbdFeature.exclusiveLock |
      RbdFeature.objectMap |
      RbdFeature.fastDiff |
      RbdFeature.deepFlatten;
    await io.imageCreate(probe, 1 << 20, { features });
    const img = await io.imageOpen(probe);
    let st: Awaited<ReturnType<typeof img.stat>>;
    try {
      st = await img.stat();
    } finally {
      await img.close(); // open (its watch held), the probe could not be removed below
    }
    await io.imageRemove(probe);
    const ok = (st.features & features) === features;
    out.push({
      name: "image-features",
      ok,
      message: ok
        ? "base images with layering, exclusive-lock, object-map, fast-diff, deep-flatten can be created"
        : `the cluster created a probe image without the needed features (got ${st.features})`,
    });
  } catch (e) {
    const hint = isCephError(e, "EPERM", "EACCES") ? " (the Ceph user needs 'profile rbd' caps on the pool)" : "";
    out.push({
      name: "image-features",
      ok: false,
      message: `cannot create a probe image in ${backupPool}: ${(e as Error).message}${hint}`,
    });
    await io.imageRemove(probe).catch(() => {});
  } finally {
    await io.close();
  }
  return out;
}
