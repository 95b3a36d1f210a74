// Durable records, one directory per id with a JSON record written atomically; an in-memory
// index serves reads. The files are the truth: load() rebuilds everything after a restart.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { writeJsonAtomic, readJsonIfExists, ensureDir } from '../common/fsutil.js';
import { invalidArgument } from '../common/errors.js';
import { logger } from '../common/log.js';

/** Records hold pod specs, env values and mounts: root only. */
export const PRIVATE_DIR = 0o700;
export const PRIVATE_FILE = 0o600;

/** `.<name>.<hex>.tmp`, what writeFileAtomic leaves when killed before its rename. */
function isStaleTemp(name: string): boolean {
  return name.startsWith('.') && name.endsWith('.tmp');
}

export interface StoredRecord {
  id: string;
}

export class RecordStore<T extends StoredRecord> {
  private readonly records = new Map<string, T>();

  constructor(
    readonly dir: string,
    private readonly fileName: string,
  ) {}

  /**
   * Reads every record. On the way: state is made root-only (directories 0700, record files 0600,
   * also for state written by older versions), and temp files of writes cut short by a crash go.
   */
  async load(): Promise<T[]> {
    await ensureDir(this.dir, PRIVATE_DIR);
    await fsp.chmod(this.dir, PRIVATE_DIR);
    this.records.clear();
    for (const id of await fsp.readdir(this.dir)) {
      if (id.startsWith('.')) continue;
      const dir = path.join(this.dir, id);
      try {
        if (!(await fsp.lstat(dir)).isDirectory()) continue;
        await fsp.chmod(dir, PRIVATE_DIR);
        const entries = await fsp.readdir(dir);
        for (const name of entries.filter(isStaleTemp)) await fsp.rm(path.join(dir, name), { force: true });
        const file = path.join(dir, this.fileName);
        const rec = await readJsonIfExists<T>(file);
        if (rec) {
          await fsp.chmod(file, PRIVATE_FILE);
          this.records.set(rec.id, rec);
        } else if (entries.every(isStaleTemp)) {
          // A crash before the first record write: nothing else was created for this id.
          await fsp.rmdir(dir).catch(() => undefined);
        }
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

  /**
   * `provisional`: a record the next put replaces (a creation under way): its directory entry is not
   * fsynced, as losing it in a host crash loses only what that creation made so far (a daemon kill loses nothing).
   */
  async put(rec: T, opts: { provisional?: boolean } = {}): Promise<void> {
    await ensureDir(this.pathOf(rec.id), PRIVATE_DIR);
    await writeJsonAtomic(path.join(this.pathOf(rec.id), this.fileName), rec, PRIVATE_FILE, { syncDir: !opts.provisional });
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
