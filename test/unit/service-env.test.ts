import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { V1Service } from '@kubernetes/client-node';
import { serviceEnv } from '../../src/agent/service-env.js';

const svc = (namespace: string, name: string, clusterIP: string, ports: { port: number; name?: string; protocol?: string }[]): V1Service => ({
  metadata: { namespace, name, uid: `${namespace}/${name}` },
  spec: { clusterIP, ports },
});

const kubernetes = svc('default', 'kubernetes', '10.96.0.1', [{ name: 'https', port: 443, protocol: 'TCP' }]);
const web = svc('shop', 'web-front', '10.96.0.20', [{ name: 'http', port: 80 }, { name: 'metrics', port: 9090, protocol: 'UDP' }]);

test('the kubernetes Service is always there; the pod namespace\'s Services with enableServiceLinks', () => {
  const env = serviceEnv([kubernetes, web, svc('other', 'db', '10.96.0.30', [{ port: 5432 }])], 'shop', undefined);
  assert.deepEqual(Object.fromEntries(env), {
    KUBERNETES_SERVICE_HOST: '10.96.0.1',
    KUBERNETES_SERVICE_PORT: '443',
    KUBERNETES_SERVICE_PORT_HTTPS: '443',
    KUBERNETES_PORT: 'tcp://10.96.0.1:443',
    KUBERNETES_PORT_443_TCP: 'tcp://10.96.0.1:443',
    KUBERNETES_PORT_443_TCP_PROTO: 'tcp',
    KUBERNETES_PORT_443_TCP_PORT: '443',
    KUBERNETES_PORT_443_TCP_ADDR: '10.96.0.1',
    WEB_FRONT_SERVICE_HOST: '10.96.0.20',
    WEB_FRONT_SERVICE_PORT: '80',
    WEB_FRONT_SERVICE_PORT_HTTP: '80',
    WEB_FRONT_SERVICE_PORT_METRICS: '9090',
    WEB_FRONT_PORT: 'tcp://10.96.0.20:80',
    WEB_FRONT_PORT_80_TCP: 'tcp://10.96.0.20:80',
    WEB_FRONT_PORT_80_TCP_PROTO: 'tcp',
    WEB_FRONT_PORT_80_TCP_PORT: '80',
    WEB_FRONT_PORT_80_TCP_ADDR: '10.96.0.20',
    WEB_FRONT_PORT_9090_UDP: 'udp://10.96.0.20:9090',
    WEB_FRONT_PORT_9090_UDP_PROTO: 'udp',
    WEB_FRONT_PORT_9090_UDP_PORT: '9090',
    WEB_FRONT_PORT_9090_UDP_ADDR: '10.96.0.20',
  });
});

test('enableServiceLinks false leaves only the kubernetes Service; headless and ExternalName have none', () => {
  assert.deepEqual([...serviceEnv([kubernetes, web], 'shop', false).keys()].filter((k) => !k.startsWith('KUBERNETES_')), []);
  const headless = svc('shop', 'headless', 'None', [{ port: 80 }]);
  const external: V1Service = { metadata: { namespace: 'shop', name: 'ext', uid: 'x' }, spec: { type: 'ExternalName', externalName: 'example.com' } };
  assert.deepEqual([...serviceEnv([headless, external], 'shop', true).keys()], []);
});

test('a Service named kubernetes in the pod\'s namespace wins over the default one', () => {
  const own = svc('shop', 'kubernetes', '10.96.7.7', [{ port: 8443 }]);
  for (const order of [[kubernetes, own], [own, kubernetes]]) {
    const env = serviceEnv(order, 'shop', true);
    assert.equal(env.get('KUBERNETES_SERVICE_HOST'), '10.96.7.7');
    assert.equal(env.get('KUBERNETES_SERVICE_PORT_HTTPS'), undefined);
  }
  assert.equal(serviceEnv([kubernetes], 'default', false).get('KUBERNETES_SERVICE_HOST'), '10.96.0.1');
});
