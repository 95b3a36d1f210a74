// Durable records, one directory per id with a JSON record written atomically; an in-memory
// index serves reads. The files are the truth: load() rebuilds everything after a restart.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { writeJsonAtomic, readJsonIfExists, ensureDir } from '../common/fsutil.js';
import { invalidArgument } from '../common/errors.js';
import { logger } from '../common/log.js';

export interface StoredRecord {
  id: string;
}

export class RecordStore<T extends StoredRecord> {
  private readonly records = new Map<string, T>();

  constructor(
    readonly dir: string,
    private readonly fileName: string,
  ) {}

  async load(): Promise<T[]> {
    await ensureDir(this.dir);
    this.records.clear();
    for (const id of await fsp.readdir(this.dir)) {
      if (id.startsWith('.')) continue;
      try {
        const rec = await readJsonIfExists<T>(path.join(this.dir, id, this.fileName));
        if (rec) this.records.set(rec.id, rec);
      } catch (err) {
        logger().warn({ id, err: String(err) }, 'skipping unreadable record');
      }
    }
    return [...this.records.values()];
  }

  /** The directory that holds the record and whatever else belongs to the id. */
  pathOf(id: string): string {
    return path.join(this.dir, id);
  }

  /** Exact id, else a unique id prefix (as containerd and CRI-O accept). */
  get(idOrPrefix: string): T | undefined {
    const exact = this.records.get(idOrPrefix);
    if (exact || !idOrPrefix) return exact;
    let found: T | undefined;
    for (const [id, rec] of this.records) {
      if (id.startsWith(idOrPrefix)) {
        if (found) throw invalidArgument(`id prefix ${idOrPrefix} matches more than one object`);
        found = rec;
      }
    }
    return found;
  }

  list(): T[] {
    return [...this.records.values()];
  }

  async put(rec: T): Promise<void> {
    await ensureDir(this.pathOf(rec.id));
    await writeJsonAtomic(path.join(this.pathOf(rec.id), this.fileName), rec);
    this.records.set(rec.id, rec);
  }

  /** Forgets the record and deletes its directory: the record file first, so a crash never leaves a half-removed record. */
  async delete(id: string): Promise<void> {
    this.records.delete(id);
    const dir = this.pathOf(id);
    await fsp.rm(path.join(dir, this.fileName), { force: true });
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
