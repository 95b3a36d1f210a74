// Names reserved synchronously, before the first await of a creation: a second request with the same
// name, however close in time, finds it taken (containerd's registrar, CRI-O's ReserveContainerName).
import { alreadyExists } from '../common/errors.js';

export class NameRegistrar {
  private readonly byName = new Map<string, string>();

  /** Reserves `name` for `id`; throws AlreadyExists naming the holder when another id has it. */
  reserve(name: string, id: string, what: string): void {
    const holder = this.byName.get(name);
    if (holder !== undefined && holder !== id) throw alreadyExists(`${what} name ${name} is already reserved for ${what} ${holder}`);
    this.byName.set(name, id);
  }

  /** Releases `name` when `id` holds it (a stale release never frees another id's reservation). */
  release(name: string, id: string): void {
    if (this.byName.get(name) === id) this.byName.delete(name);
  }

  holder(name: string): string | undefined {
    return this.byName.get(name);
  }
}
