// Picks the cgroup reader for the host's hierarchy.
import { detectCgroupVersion, type CgroupDetailReader } from './cgroup.js';
import { CgroupV1Reader } from './cgroup-v1.js';
import { CgroupV2Reader } from './cgroup-v2.js';

export function cgroupReaderFor(root = '/sys/fs/cgroup'): CgroupDetailReader {
  return detectCgroupVersion(root) === 2 ? new CgroupV2Reader(root) : new CgroupV1Reader(root);
}
