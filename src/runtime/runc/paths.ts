// Where the runc backend keeps its files: the runtime's --root, conmon's exit dir, attach-socket links
// and a persist dir per container (conmon's pid files, the oom marker, our monitor record, the bundle).
import path from 'node:path';
import { invalidArgument } from '../../common/errors.js';

export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
export const UNIX_SOCKET_PATH_MAX = 107;

export function checkId(id: string): string {
  if (!ID_PATTERN.test(id)) throw invalidArgument(`container id ${JSON.stringify(id)} is not a valid id`);
  return id;
}

export class RuncPaths {
  readonly runtimeRoot: string;
  readonly exitDir: string;
  readonly socketDir: string;
  readonly persistRoot: string;

  constructor(opts: { runtimeRoot: string; exitDir: string; socketDir: string; persistRoot?: string }) {
    this.runtimeRoot = path.resolve(opts.runtimeRoot);
    this.exitDir = path.resolve(opts.exitDir);
    this.socketDir = path.resolve(opts.socketDir);
    this.persistRoot = path.resolve(opts.persistRoot ?? path.join(path.dirname(this.exitDir), 'conmon'));
  }

  persistDir(id: string): string {
    return path.join(this.persistRoot, checkId(id));
  }

  /** The bundle (config.json, conmon's ctl and winsz fifos and attach socket) of a container created here. */
  bundleDir(id: string): string {
    return path.join(this.persistDir(id), 'bundle');
  }

  /** What we remember about the container's monitor (see MonitorRecord). */
  monitorRecord(id: string): string {
    return path.join(this.persistDir(id), 'monitor.json');
  }

  exitFile(id: string): string {
    return path.join(this.exitDir, checkId(id));
  }

  /** The runtime's own directory for the container under its --root (runc and crun both keep one). */
  runtimeStateDir(id: string): string {
    return path.join(this.runtimeRoot, checkId(id));
  }

  /** conmon's attach socket (SOCK_SEQPACKET): frames out are `<1 stdout|2 stderr><bytes>`, stdin goes in raw. */
  attachSocket(id: string): string {
    return path.join(this.socketLink(id), 'attach');
  }

  /** conmon's `<socketDir>/<id>` link to the bundle, one byte shorter when it would be exactly 107 bytes (as conmon makes it). */
  socketLink(id: string): string {
    const link = path.join(this.socketDir, checkId(id));
    return link.length === UNIX_SOCKET_PATH_MAX ? link.slice(0, -1) : link;
  }
}
