// Container log rotation, the kubelet's way: every interval, a running container whose log file reached the
// maximum size has it renamed to <log>.<YYYYMMDD-HHMMSS> and the runtime told to reopen it (ReopenContainerLog);
// of the rotated files at most maxFiles-1 are kept, all but the one just rotated gzip-compressed.
import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { CriClient } from './cri-client.js';

export interface LogRotationPolicy {
  maxSizeBytes: number;
  /** Files per container log, the current one included (at least 2). */
  maxFiles: number;
  intervalMs: number;
}

const ROTATED = /^\d{8}-\d{6}(\.gz)?$/;

/** The suffix of a rotated file: the kubelet's YYYYMMDD-HHMMSS stamp (in UTC here). */
export function rotationStamp(at: Date): string {
  const p = (n: number) => String(n).padStart(2, '0');
  return `${at.getUTCFullYear()}${p(at.getUTCMonth() + 1)}${p(at.getUTCDate())}-${p(at.getUTCHours())}${p(at.getUTCMinutes())}${p(at.getUTCSeconds())}`;
}

export interface CleanupPlan {
  remove: string[];
  compress: string[];
}

/**
 * Before rotating `logName`: which of the directory's files to remove (the oldest rotated ones beyond
 * maxFiles-2, and leftover temp files) and which to compress (every remaining rotated one). Pure.
 */
export function planLogCleanup(logName: string, files: string[], maxFiles: number): CleanupPlan {
  const remove: string[] = [];
  const rotated: string[] = [];
  for (const f of files) {
    if (!f.startsWith(`${logName}.`)) continue;
    const suffix = f.slice(logName.length + 1);
    if (suffix.endsWith('.tmp')) remove.push(f);
    else if (ROTATED.test(suffix)) rotated.push(f);
  }
  // Oldest first: the stamps sort by time.
  rotated.sort();
  const keep = Math.max(0, maxFiles - 2);
  const excess = rotated.length - keep;
  if (excess > 0) remove.push(...rotated.splice(0, excess));
  const compress = rotated.filter((f) => !f.endsWith('.gz'));
  return { remove, compress };
}

async function compressFile(file: string): Promise<void> {
  const tmp = `${file}.gz.tmp`;
  await pipeline(createReadStream(file), createGzip(), createWriteStream(tmp));
  await fsp.rename(tmp, `${file}.gz`);
  await fsp.rm(file, { force: true });
}

export class ContainerLogRotator {
  private timer?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly cri: CriClient,
    private readonly policy: LogRotationPolicy,
    private readonly log: Logger,
  ) {}

  start(): void {
    const tick = async () => {
      await this.rotateAll().catch((err) => this.log.warn({ err: errorMessage(err) }, 'container log rotation failed'));
      if (!this.stopped) this.timer = setTimeout(tick, this.policy.intervalMs);
    };
    this.timer = setTimeout(tick, this.policy.intervalMs);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** One pass over the running containers. */
  async rotateAll(): Promise<void> {
    const { containers } = await this.cri.runtime('ListContainers', { filter: { state: { state: 'CONTAINER_RUNNING' } } });
    for (const c of containers as any[]) {
      if (this.stopped) return;
      const status = (await this.cri.runtime('ContainerStatus', { container_id: c.id }).catch(() => undefined))?.status;
      const logPath: string | undefined = status?.log_path;
      if (!logPath || !path.isAbsolute(logPath)) continue;
      await this.rotateIfFull(c.id, logPath).catch((err) =>
        this.log.warn({ container: c.id, log: logPath, err: errorMessage(err) }, 'container log not rotated'),
      );
    }
  }

  private async rotateIfFull(containerId: string, logPath: string): Promise<void> {
    const size = (await fsp.stat(logPath).catch(() => undefined))?.size ?? 0;
    if (size < this.policy.maxSizeBytes) return;
    const dir = path.dirname(logPath);
    const name = path.basename(logPath);
    const plan = planLogCleanup(name, await fsp.readdir(dir), this.policy.maxFiles);
    for (const f of plan.remove) await fsp.rm(path.join(dir, f), { force: true });
    for (const f of plan.compress) await compressFile(path.join(dir, f));
    const rotated = `${logPath}.${rotationStamp(new Date())}`;
    if (await fsp.stat(rotated).then(() => true, () => false)) return; // rotated this very second already
    await fsp.rename(logPath, rotated);
    try {
      await this.cri.runtime('ReopenContainerLog', { container_id: containerId });
    } catch (err) {
      // The runtime still writes to the renamed file: give it its name back, as the kubelet does.
      await fsp.rename(rotated, logPath).catch(() => undefined);
      throw err;
    }
    this.log.debug({ container: containerId, log: logPath, size }, 'container log rotated');
  }
}
