import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { CoordinationV1Api, KubeConfig } from '@kubernetes/client-node';
import { microTime, normalizeWireTimes, normalizeWireTimesInJson, secondsTime } from '../../src/agent/api-time.js';
import { makeApiClient } from '../../src/agent/kube-client.js';

test('MicroTime text has exactly six fractional digits, Time text none', () => {
  const cases: [Date | string, string, string][] = [
    [new Date('2026-11-28T18:27:17.226Z'), '2026-11-28T18:27:17.226000Z', '2026-11-28T18:27:17Z'],
    ['2026-11-28T18:27:17Z', '2026-11-28T18:27:17.000000Z', '2026-11-28T18:27:17Z'],
    ['2026-11-28T18:27:17.123456789Z', '2026-11-28T18:27:17.123456Z', '2026-11-28T18:27:17Z'],
    ['2026-11-28T18:27:17.5+02:00', '2026-11-28T18:27:17.500000+02:00', '2026-11-28T18:27:17+02:00'],
  ];
  for (const [input, micro, seconds] of cases) {
    assert.equal(microTime(input), micro, String(input));
    assert.equal(secondsTime(input), seconds, String(input));
  }
  assert.throws(() => microTime('yesterday'));
});

test('a request body gets MicroTime fields in six digits and Time fields in seconds, user data untouched', () => {
  const stamp = '2026-11-28T18:27:17.226Z';
  const body = {
    metadata: { name: 'x', creationTimestamp: stamp, labels: { renewTime: stamp }, annotations: { startTime: stamp } },
    spec: { renewTime: new Date(stamp), acquireTime: stamp, holderIdentity: stamp, containers: [{ env: [{ name: 'time', value: stamp }] }] },
    status: { conditions: [{ lastTransitionTime: new Date(stamp), lastProbeTime: null }], startTime: stamp },
    data: { eventTime: stamp },
    eventTime: stamp,
    series: { lastObservedTime: stamp, count: 2 },
  };
  assert.deepEqual(normalizeWireTimes(body), {
    metadata: { name: 'x', creationTimestamp: '2026-11-28T18:27:17Z', labels: { renewTime: stamp }, annotations: { startTime: stamp } },
    spec: { renewTime: '2026-11-28T18:27:17.226000Z', acquireTime: '2026-11-28T18:27:17.226000Z', holderIdentity: stamp, containers: [{ env: [{ name: 'time', value: stamp }] }] },
    status: { conditions: [{ lastTransitionTime: '2026-11-28T18:27:17Z', lastProbeTime: null }], startTime: '2026-11-28T18:27:17Z' },
    data: { eventTime: stamp },
    eventTime: '2026-11-28T18:27:17.226000Z',
    series: { lastObservedTime: '2026-11-28T18:27:17.226000Z', count: 2 },
  });
  assert.equal(normalizeWireTimesInJson('not json'), 'not json');
});

test('the agent\'s API clients send a Lease renewTime with six digits', async () => {
  const sent: any[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      sent.push(JSON.parse(Buffer.concat(chunks).toString()));
      res.writeHead(201, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(sent[sent.length - 1]));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  try {
    const config = new KubeConfig();
    config.loadFromOptions({
      clusters: [{ name: 'c', server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, skipTLSVerify: true }],
      users: [{ name: 'u', token: 't' }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    const api = makeApiClient(config, CoordinationV1Api);
    await api.createNamespacedLease({
      namespace: 'kube-node-lease',
      body: { metadata: { name: 'n' }, spec: { holderIdentity: 'n', renewTime: new Date('2026-11-28T18:27:17.226Z') } },
    });
    assert.equal(sent[0].spec.renewTime, '2026-11-28T18:27:17.226000Z');
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
