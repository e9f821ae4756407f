/**
 * A message stream with an asynchronous step applied to up to `limit` messages at once (chunk
 * compression on the source, decompression on the destination), handed on in the stream's order.
 * Pull-driven: messages are pulled from the source only when the consumer asks for one, and no further
 * ahead once the oldest is ready — so the consumer's backpressure still reaches the source, and at most
 * `limit` messages are held here. A step's failure surfaces when its message's turn comes.
 */
import type { TransferMessage } from "../../../src/gen/rbdbackup/v1/transfer";

interface Pending {
  p: Promise<TransferMessage>;
  ready: boolean;
}

function track(p: Promise<TransferMessage>): Pending {
  const q: Pending = { p, ready: false };
  const settle = () => {
    q.ready = true;
  };
  p.then(settle, settle); // also keeps a rejection from being unhandled until it is awaited
  return q;
}

export function inOrder(
  it: AsyncIterator<TransferMessage>,
  step: (m: TransferMessage) => Promise<TransferMessage>,
  limit: number,
  /** Called for each message already stepped but never handed on (the consumer stopped early). */
  dropped?: (m: TransferMessage) => void,
): AsyncIterableIterator<TransferMessage> {
  const queue: Pending[] = [];
  const max = Math.max(1, limit);
  let ended = false;
  const self: AsyncIterableIterator<TransferMessage> = {
    [Symbol.asyncIterator]: () => self,
    async next(): Promise<IteratorResult<TransferMessage>> {
      while (!ended && queue.length < max && !queue[0]?.ready) {
        if (queue.length > 0) {
          // A step that is done already (the header's, a zero range's: nothing to do) flags itself on the
          // next microtask: let it, so that the oldest goes on at once instead of waiting for the next
          // message to be pulled (the source's snapshot and first read before a transfer's header).
          await null;
          if (ended || queue[0]?.ready) break; // (return() may have run meanwhile)
        }
        const r = await it.next();
        if (r.done) {
          ended = true;
          break;
        }
        queue.push(track(step(r.value)));
      }
      const head = queue.shift();
      if (!head) return { done: true, value: undefined };
      return { done: false, value: await head.p };
    },
    async return(): Promise<IteratorResult<TransferMessage>> {
      for (const q of queue.splice(0))
        void q.p.then(
          (m) => dropped?.(m),
          () => {},
        );
      if (!ended) {
        ended = true;
        await it.return?.(undefined).catch(() => {});
      }
      return { done: true, value: undefined };
    },
  };
  return self;
}
