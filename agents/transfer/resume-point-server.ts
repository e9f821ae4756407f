/**
 * TransferService.ResumePoint on the data-plane server: unary — exactly one ResumePointRequest, then
 * one answer. The handler gets the caller (transfer-authz.ts): the same capability as a Transfer with
 * this header is required (authorizeResumePoint), so a checkpoint is only revealed to whoever may
 * write that image.
 */
import {
  type ResumePointRequest,
  type ResumePointResponse,
  TransferServiceDefinition,
} from "../../src/gen/rbdbackup/v1/transfer";
import type { TransferCaller } from "./transfer-authz";
import { type UnaryOptions, unaryMethod } from "./unary-method";

export type ResumePointEntry = (
  req: ResumePointRequest,
  signal: AbortSignal,
  caller: TransferCaller,
) => Promise<Partial<ResumePointResponse>>;

export function resumePointMethod(entry: ResumePointEntry, opts: UnaryOptions) {
  return unaryMethod(TransferServiceDefinition.fullName, TransferServiceDefinition.methods.resumePoint, entry, opts);
}
