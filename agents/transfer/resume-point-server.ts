/**
 * TransferService.ResumePoint on the data-plane server: unary — exactly one ResumePointRequest, then
 * one answer. The handler gets the caller (transfer-authz.ts): the same capability as a Transfer with
 * this header is required (authorizeResumePoint), so a checkpoint is only revealed to whoever may
 * write that image.
 */
import { Status } from "nice-grpc-common";
import { AppError } from "../../src/common/errors";
import {
  type ResumePointRequest,
  type ResumePointResponse,
  TransferServiceDefinition,
} from "../../src/gen/rbdbackup/v1/transfer";
import { MessageReader } from "./message-reader";
import type { ServerCall } from "./server-call";
import type { TransferCaller } from "./transfer-authz";

export type ResumePointEntry = (
  req: ResumePointRequest,
  signal: AbortSignal,
  caller: TransferCaller,
) => Promise<Partial<ResumePointResponse>>;

export function resumePointMethod(entry: ResumePointEntry, opts: { maxMessageBytes: number }) {
  const def = TransferServiceDefinition.methods.resumePoint;
  const path = `/${TransferServiceDefinition.fullName}/${def.name}`;
  return (call: ServerCall, caller: TransferCaller): void => {
    const reader = new MessageReader(call.stream, {
      maxMessageBytes: opts.maxMessageBytes,
      decode: (bytes) => {
        try {
          return def.requestType.decode(bytes);
        } catch (e) {
          throw new AppError(
            Status.INVALID_ARGUMENT,
            `a message that is not a ResumePointRequest: ${(e as Error).message}`,
          );
        }
      },
    });
    (async () => {
      let req: ResumePointRequest | undefined;
      for await (const m of reader) {
        if (req) throw new AppError(Status.UNIMPLEMENTED, `received a second request message for unary method ${path}`);
        req = m;
      }
      if (!req) throw new AppError(Status.UNIMPLEMENTED, `received no request message for unary method ${path}`);
      const res = await entry(req, call.signal, caller);
      return def.responseType.encode(def.responseType.fromPartial(res)).finish();
    })().then(
      (body) => call.reply(body),
      (e) => call.failWith(e),
    );
  };
}
