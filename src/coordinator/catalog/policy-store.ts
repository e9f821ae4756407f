/**
 * The part of the catalog that keeps protection policies and each selected volume's protection record
 * (see ../policy/model.ts). Same rules as the Catalog: synchronous, each call atomic, group several with
 * Catalog.transaction.
 */
import type { Policy, ProtectionRecord } from "../policy/model";
import type { Page } from "./catalog";

export interface ProtectionFilter {
  policy?: string;
  cluster?: string;
}

export interface PolicyStore {
  /** Throws an Error whose message contains "UNIQUE" when the name is taken. */
  insertPolicy(p: Policy): void;
  getPolicy(name: string): Policy | undefined;
  updatePolicy(p: Policy): void;
  /** Removes the policy and its protection records. */
  deletePolicy(name: string): void;
  /** By name, ascending. */
  listPolicies(pageSize: number, pageToken: string): Page<Policy>;
  allPolicies(): Policy[];

  upsertProtection(r: ProtectionRecord): void;
  getProtection(policy: string, volumeKey: string): ProtectionRecord | undefined;
  /** Every record of a policy, by volume key. */
  protectionOfPolicy(policy: string): ProtectionRecord[];
  /** The records whose next run is at or before `nowMs` (indexed), by (policy, volume key). */
  dueProtection(nowMs: number): ProtectionRecord[];
  /** Every record of a volume (one per policy selecting it). */
  protectionOfVolume(volumeKey: string): ProtectionRecord[];
  /** By (policy, volume key), ascending. */
  listProtection(filter: ProtectionFilter, pageSize: number, pageToken: string): Page<ProtectionRecord>;
  deleteProtection(policy: string, volumeKey: string): void;
}
