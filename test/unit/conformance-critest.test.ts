// The critest phase's readers: Ginkgo JUnit reports (one report line per spec) and the p50 of
// critest's lifecycle benchmark files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { benchmarkLatencies, parseJunit, parseSysvShm } from '../conformance/critest.js';

const JUNIT = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites tests="4" disabled="1" errors="0" failures="1" time="12.5">
  <testsuite name="CRI validation" package="/x" tests="4" disabled="1" skipped="0" errors="0" failures="1" time="12.5">
    <testcase name="[BeforeSuite]" classname="CRI validation" status="passed" time="0.01"></testcase>
    <testcase name="[It] [k8s.io] Image Manager public image with tag should be pulled and removed [Conformance] [Serial]" classname="CRI validation" status="passed" time="1.2"><system-err>log &amp; more</system-err></testcase>
    <testcase name="[It] [k8s.io] Security Context bucket runtime should support MaskedPaths" classname="CRI validation" status="failed" time="3.4"><failure message="Expected&#xA;    &lt;string&gt;: &#34;x&#34;&#xA;to equal" type="failed">[FAILED] Expected
    &lt;string&gt;: x</failure><system-err>...</system-err></testcase>
    <testcase name="[It] [k8s.io] Security Context SupplementalGroupsPolicy when X it works" classname="CRI validation" status="skipped" time="0.1"><skipped message="skipped - The runtime does not support SupplementalGroupsPolicy feature"></skipped></testcase>
    <testcase name="[It] [k8s.io] Image Manager public image with digest should be pulled and removed [Conformance] [Serial]" classname="CRI validation" status="skipped" time="0"><skipped message="skipped"></skipped></testcase>
  </testsuite>
</testsuites>`;

test('parseJunit: one case per spec, [It] dropped, entities decoded, failure and skip messages kept', () => {
  const cases = parseJunit(JUNIT);
  assert.equal(cases.length, 5);
  assert.deepEqual(cases.map((c) => c.status), ['passed', 'passed', 'failed', 'skipped', 'skipped']);
  assert.equal(cases[1]!.name, '[k8s.io] Image Manager public image with tag should be pulled and removed [Conformance] [Serial]');
  assert.equal(cases[2]!.message, 'Expected\n    <string>: "x"\nto equal');
  assert.equal(cases[2]!.seconds, 3.4);
  assert.equal(cases[3]!.message, 'skipped - The runtime does not support SupplementalGroupsPolicy feature');
  assert.equal(cases[4]!.message, 'skipped');
});

test('parseJunit: a failure without a message attribute uses its text; no status attribute means judged by children', () => {
  const [c] = parseJunit('<testcase name="[It] a b"><failure type="x">boom &lt;1&gt;</failure></testcase>');
  assert.equal(c!.status, 'failed');
  assert.equal(c!.message, 'boom <1>');
  const [d] = parseJunit('<testcase name="[It] c" time="1"/>');
  assert.equal(d!.status, 'passed');
});

test('benchmarkLatencies: the median per operation, in ms', () => {
  const data = {
    operationsNames: ['CreateContainer', 'StartContainer'],
    numParallel: 2,
    datapoints: [
      { operationsDurationsNs: [3e6, 10e6] },
      { operationsDurationsNs: [1e6, 30e6] },
      { operationsDurationsNs: [2e6, 20e6] },
      { operationsDurationsNs: [4e6] },
    ],
  };
  assert.deepEqual(benchmarkLatencies('container', data), [
    { benchmark: 'container', operation: 'CreateContainer', p50Ms: 2.5, samples: 4 },
    { benchmark: 'container', operation: 'StartContainer', p50Ms: 20, samples: 3 },
  ]);
  assert.deepEqual(benchmarkLatencies('x', { something: 'else' }), []);
});

test('parseSysvShm: the columns of /proc/sysvipc/shm by their header names', () => {
  const text = [
    '       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap',
    '-1191079328          0   644               1048576 32112     0      0     0     0     0     0          0          0 1795896379                     0                     0',
    '         0          7   600                  4096   100   101      2  1000  1000  1000  1000 1795896400 1795896400 1795896300                  4096                     0',
    '',
  ].join('\n');
  assert.deepEqual(parseSysvShm(text), [
    { shmid: 0, size: 1048576, nattch: 0, cuid: 0, ctime: 1795896379 },
    { shmid: 7, size: 4096, nattch: 2, cuid: 1000, ctime: 1795896300 },
  ]);
  assert.deepEqual(parseSysvShm(''), []);
});
