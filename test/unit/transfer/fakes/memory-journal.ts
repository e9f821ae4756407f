/** The sink's recovery journal in memory (agents/transfer/journal.ts keeps it on disk). */
import type { JournalEntry, JournalStore } from "../../../../agents/transfer/journal";

export class MemoryJournal implements JournalStore {
  readonly entries = new Map<string, JournalEntry>();

  async write(e: JournalEntry): Promise<void> {
    this.entries.set(e.transferId, structuredClone(e));
  }

  async remove(id: string): Promise<void> {
    this.entries.delete(id);
  }

  async list(): Promise<JournalEntry[]> {
    return [...this.entries.values()].map((e) => structuredClone(e));
  }
}
