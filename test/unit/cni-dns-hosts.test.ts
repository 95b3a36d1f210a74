import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildResolvConf } from '../../src/network/dns.js';
import { buildHostsFile } from '../../src/network/hosts.js';
import { isKind } from '../../src/common/errors.js';

const HOST_RESOLV = 'nameserver 10.255.255.53\nsearch example.internal\n';

test('buildResolvConf', async (t) => {
  const cases: { name: string; dns: Parameters<typeof buildResolvConf>[0]; host?: string; want: string }[] = [
    { name: 'no DNS config copies the host file', dns: undefined, want: HOST_RESOLV },
    { name: 'empty DNS config copies the host file', dns: { servers: [], searches: [], options: [] }, want: HOST_RESOLV },
    { name: 'host file without final newline gets one', dns: undefined, host: 'nameserver 1.1.1.1', want: 'nameserver 1.1.1.1\n' },
    { name: 'empty host file stays empty', dns: undefined, host: '', want: '' },
    {
      name: 'cluster DNS',
      dns: {
        servers: ['10.96.0.10'],
        searches: ['default.svc.cluster.local', 'svc.cluster.local', 'cluster.local'],
        options: ['ndots:5'],
      },
      want: 'search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n',
    },
    { name: 'servers only', dns: { servers: ['1.1.1.1', '2606:4700::1111'] }, want: 'nameserver 1.1.1.1\nnameserver 2606:4700::1111\n' },
    { name: 'options only', dns: { options: ['ndots:2', 'edns0'] }, want: 'options ndots:2 edns0\n' },
  ];
  for (const c of cases) {
    await t.test(c.name, () => assert.equal(buildResolvConf(c.dns, c.host ?? HOST_RESOLV), c.want));
  }
  assert.throws(() => buildResolvConf({ servers: ['1.1.1.1\nnameserver 6.6.6.6'] }, ''), (e) => isKind(e, 'InvalidArgument'));
  assert.throws(() => buildResolvConf({ searches: [''] }, ''), /dns_config.searches/);
});

test('buildHostsFile', () => {
  const hosts = buildHostsFile('web-0', ['10.88.0.5', 'fd00::5'], [
    { ip: '10.1.2.3', hostnames: ['foo.local', 'bar.local'] },
    { ip: '10.1.2.4', hostnames: [] },
  ]);
  assert.equal(
    hosts,
    [
      '# Kubernetes-managed hosts file (written by nodelet).',
      '127.0.0.1\tlocalhost',
      '::1\tlocalhost ip6-localhost ip6-loopback',
      'fe00::0\tip6-localnet',
      'fe00::0\tip6-mcastprefix',
      'fe00::1\tip6-allnodes',
      'fe00::2\tip6-allrouters',
      '10.88.0.5\tweb-0',
      'fd00::5\tweb-0',
      '',
      '# Entries added by HostAliases.',
      '10.1.2.3\tfoo.local\tbar.local',
      '',
    ].join('\n'),
  );
  const bare = buildHostsFile('pod', []);
  assert.ok(bare.includes('127.0.0.1\tlocalhost\n'));
  assert.ok(!bare.includes('pod\n'), 'no pod IP, no pod line');
  assert.ok(!bare.includes('HostAliases'));
  assert.throws(() => buildHostsFile('bad name', ['10.0.0.1']), (e) => isKind(e, 'InvalidArgument'));
  assert.throws(() => buildHostsFile('ok', ['10.0.0.300']), /pod IP/);
  assert.throws(() => buildHostsFile('ok', [], [{ ip: 'x', hostnames: ['a'] }]), /host alias IP/);
  assert.throws(() => buildHostsFile('ok', [], [{ ip: '1.2.3.4', hostnames: ['a\nb'] }]), /host alias name/);
});
