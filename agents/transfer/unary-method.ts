/**
 * A unary method on the data-plane server (ListChains, ResumePoint): exactly one request message,
 * decoded with the generated codec (anything else is INVALID_ARGUMENT), then one answer encoded with it,
 * or the status of the handler's failure. The handler gets the call's signal and the caller.
 */
import { Status } from "nice-grpc-common";
import { AppError } from "../../src/common/errors";
import { failWhenIdle, MessageReader } from "./message-reader";
import type { ServerCall } from "./server-call";
import type { TransferCaller } from "./transfer-authz";

/** What unaryMethod needs of a generated method definition. */
export interface UnaryDefinition<Req, Res> {
  name: string;
  requestType: { decode(bytes: Uint8Array): Req };
  responseType: { encode(m: Res): { finish(): Uint8Array }; fromPartial(p: never): Res };
}

export type UnaryEntry<Req, Res> = (req: Req, signal: AbortSignal, caller: TransferCaller) => Promise<Partial<Res>>;

export interface UnaryOptions {
  maxMessageBytes: number;
  idleTimeoutMs: number;
  admit?: (caller: TransferCaller) => void;
}

export function unaryMethod<Req, Res>(
  serviceName: string,
  def: UnaryDefinition<Req, Res>,
  entry: UnaryEntry<Req, Res>,
  /**
   * idleTimeoutMs: a request that does not arrive whole, with nothing received for this long, fails.
   * admit: the caller's check before a byte of the request is read (the data plane: an agent with a
   * capability that verifies), so a refused caller never holds a request buffer.
   */
  opts: UnaryOptions,
): (call: ServerCall, caller: TransferCaller) => void {
  const path = `/${serviceName}/${def.name}`;
  const requestName = `${def.name}Request`;
  return (call, caller) => {
    try {
      opts.admit?.(caller);
    } catch (e) {
      call.failWith(e);
      return;
    }
    const reader = new MessageReader(call.stream, {
      maxMessageBytes: opts.maxMessageBytes,
      decode: (bytes) => {
        try {
          return def.requestType.decode(bytes);
        } catch (e) {
          throw new AppError(
            Status.INVALID_ARGUMENT,
            `a message that is not a ${requestName}: ${(e as Error).message}`,
          );
        }
      },
    });
    const idle = failWhenIdle(call.stream, reader, opts.idleTimeoutMs, `the ${requestName} did not arrive`);
    (async () => {
      let req: Req | undefined;
      for await (const m of reader) {
        if (req) throw new AppError(Status.UNIMPLEMENTED, `received a second request message for unary method ${path}`);
        req = m;
      }
      if (!req) throw new AppError(Status.UNIMPLEMENTED, `received no request message for unary method ${path}`);
      idle.stop();
      const res = await entry(req, call.signal, caller);
      return def.responseType.encode(def.responseType.fromPartial(res as never)).finish();
    })().then(
      (body) => call.reply(body),
      (e) => call.failWith(e),
    );
  };
}
