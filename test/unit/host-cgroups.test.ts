import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cgroupV1Controllers, hasHugetlbController } from '../../src/runtime/host-cgroups.js';

// A cgroup v1 hybrid host without hugetlb (as this project's build machine), lines as the kernel writes them.
const HYBRID_NO_HUGETLB = [
  '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
  '32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu',
  '33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct',
  '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
  '40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd',
  '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate',
  '50 23 0:50 / /mnt/hugetlb-lookalike rw shared:9 - tmpfs hugetlb rw',
].join('\n');
const WITH_HUGETLB = `${HYBRID_NO_HUGETLB}\n42 31 0:39 / /sys/fs/cgroup/hugetlb rw,nosuid shared:20 - cgroup cgroup rw,hugetlb`;
const COMBINED_MOUNT = '32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct';

const cases = [
  { name: 'v1 without a hugetlb hierarchy', facts: { cgroupV2: false, mountinfo: HYBRID_NO_HUGETLB, rootControllers: '' }, want: false },
  { name: 'v1 with a hugetlb hierarchy', facts: { cgroupV2: false, mountinfo: WITH_HUGETLB, rootControllers: '' }, want: true },
  { name: 'v1 with no cgroup mounts at all', facts: { cgroupV2: false, mountinfo: '', rootControllers: '' }, want: false },
  { name: 'v2 root offers hugetlb', facts: { cgroupV2: true, mountinfo: '', rootControllers: 'cpuset cpu io memory hugetlb pids rdma misc\n' }, want: true },
  { name: 'v2 root without hugetlb', facts: { cgroupV2: true, mountinfo: WITH_HUGETLB, rootControllers: 'cpuset cpu io memory pids\n' }, want: false },
];
for (const c of cases) {
  test(`hugetlb controller: ${c.name} → ${c.want}`, () => {
    assert.equal(hasHugetlbController(c.facts), c.want);
  });
}

test('v1 controllers: only cgroup mounts count, combined hierarchies give each controller', () => {
  assert.deepEqual([...cgroupV1Controllers(COMBINED_MOUNT)].sort(), ['cpu', 'cpuacct']);
  assert.equal(cgroupV1Controllers(HYBRID_NO_HUGETLB).has('hugetlb'), false, 'a tmpfs named hugetlb is not the controller');
});
