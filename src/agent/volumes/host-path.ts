// hostPath volumes: the type checks (and creations) the kubelet does before the container starts.
import { promises as fsp, type Stats } from 'node:fs';
import { failedPrecondition, hasCode, invalidArgument } from '../../common/errors.js';

export type HostPathType = '' | 'DirectoryOrCreate' | 'Directory' | 'FileOrCreate' | 'File' | 'Socket' | 'CharDevice' | 'BlockDevice';

async function statOrUndefined(p: string): Promise<Stats | undefined> {
  try {
    return await fsp.stat(p);
  } catch (err) {
    if (hasCode(err, 'ENOENT')) return undefined;
    throw err;
  }
}

function failed(p: string, what: string): Error {
  return failedPrecondition(`hostPath type check failed: ${p} is not ${what}`);
}

export async function prepareHostPath(p: string, type: string | undefined): Promise<void> {
  if (!p.startsWith('/')) throw invalidArgument(`hostPath.path ${JSON.stringify(p)} must be absolute`);
  const kind = (type ?? '') as HostPathType;
  const st = await statOrUndefined(p);
  switch (kind) {
    case '':
      return;
    case 'DirectoryOrCreate':
      if (!st) return void (await fsp.mkdir(p, { recursive: true, mode: 0o755 }));
      if (!st.isDirectory()) throw failed(p, 'a directory');
      return;
    case 'Directory':
      if (!st?.isDirectory()) throw failed(p, 'a directory');
      return;
    case 'FileOrCreate':
      if (!st) {
        // Like the kubelet: the file is created, its parent directory is not.
        const fh = await fsp.open(p, 'a', 0o644).catch((err) => {
          throw failedPrecondition(`hostPath ${p}: cannot create file: ${(err as Error).message}`);
        });
        await fh.close();
        return;
      }
      if (!st.isFile()) throw failed(p, 'a file');
      return;
    case 'File':
      if (!st?.isFile()) throw failed(p, 'a file');
      return;
    case 'Socket':
      if (!st?.isSocket()) throw failed(p, 'a socket file');
      return;
    case 'CharDevice':
      if (!st?.isCharacterDevice()) throw failed(p, 'a character device');
      return;
    case 'BlockDevice':
      if (!st?.isBlockDevice()) throw failed(p, 'a block device');
      return;
    default:
      throw invalidArgument(`hostPath.type ${JSON.stringify(type)} is not supported`);
  }
}
