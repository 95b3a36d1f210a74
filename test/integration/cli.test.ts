// The `nodelet` client end to end: bin/nodelet against a real nodelet-cri and registry.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { run } from '../../src/common/exec.js';
import { spawnChild } from '../helpers/spawn.js';
import { startTestDaemon, type TestDaemon } from '../helpers/daemon.js';
import { useRegistries, type Registries } from '../helpers/registries.js';
import { waitFor } from '../helpers/pods.js';

// dist/test/integration → repository root.
const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bin', 'nodelet');
const TAG = randomBytes(3).toString('hex');

let d: TestDaemon;
let reg: Registries;
let logRoot: string;
let BUSYBOX: string;

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

async function nodelet(...args: string[]): Promise<CliResult> {
  const res = await run(process.execPath, [BIN, '-r', `unix://${d.socket}`, ...args], { reject: false, timeoutMs: 120_000 });
  return { code: res.exitCode, stdout: res.stdout, stderr: res.stderr };
}

/** Runs the CLI and fails the test unless it exits 0. */
async function ok(...args: string[]): Promise<string> {
  const res = await nodelet(...args);
  assert.equal(res.code, 0, `nodelet ${args.join(' ')} exited ${res.code}: ${res.stderr}`);
  return res.stdout;
}

/** The table's data rows split on runs of 3+ spaces. */
function tableRows(out: string): string[][] {
  return out.trimEnd().split('\n').slice(1).map((line) => line.split(/ {3,}/));
}

before(async () => {
  reg = await useRegistries();
  d = await startTestDaemon();
  logRoot = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-cli-logs-'));
  BUSYBOX = `${reg.plain}/nodelet-test/busybox:latest`;
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
  if (logRoot) await fsp.rm(logRoot, { recursive: true, force: true });
});

test('version names the runtime', async () => {
  const out = await ok('version');
  assert.match(out, /RuntimeName:\s+nodelet/);
  assert.match(out, /RuntimeApiVersion:\s+v1/);
  const json = JSON.parse(await ok('version', '-o', 'json'));
  assert.equal(json.runtime_name, 'nodelet');
});

test('pull, images, inspecti', async () => {
  assert.match(await ok('pull', BUSYBOX), /^Image is up to date for sha256:[0-9a-f]{64}\n$/);
  const table = await ok('images');
  assert.match(table.split('\n')[0]!, /^IMAGE\s+TAG\s+IMAGE ID\s+SIZE$/);
  const row = tableRows(table).find((r) => r[0] === `${reg.plain}/nodelet-test/busybox`);
  assert.ok(row, `busybox not in:\n${table}`);
  assert.equal(row[1], 'latest');
  assert.match(row[2]!, /^[0-9a-f]{13}$/);
  assert.match(row[3]!, /^\d+(\.\d+)?[kMG]?B$/);
  const json = JSON.parse(await ok('images', '-o', 'json'));
  const image = json.images.find((i: any) => i.repo_tags.includes(BUSYBOX));
  assert.ok(image);
  assert.deepEqual((await ok('images', '-q', BUSYBOX)).trim().split('\n'), [image.id]);
  const inspected = JSON.parse(await ok('inspecti', BUSYBOX));
  assert.equal(inspected.status.id, image.id);
  const missing = await nodelet('inspecti', `${reg.plain}/nodelet-test/does-not-exist:latest`);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^nodelet: no such image/);
});

test('run, ps, pods, logs, exec, inspect, stop, rm', async () => {
  const podName = `cli-printer-${TAG}`;
  const script = 'echo line-1; echo line-2; echo oops >&2; printf no-; sleep 0.2; echo newline; exec sleep 3600';
  const out = await ok('run', '-v', '--log-root', logRoot, '--pod-name', podName, '--name', 'printer', '--env', 'GREETING=hi there', '--label', `cli-test=${TAG}`, BUSYBOX, '--', 'sh', '-c', script);
  const [, podId] = /^pod ([0-9a-f]+)$/m.exec(out) ?? [];
  const [, id] = /^container ([0-9a-f]+)$/m.exec(out) ?? [];
  assert.ok(podId && id, out);
  const short = id.slice(0, 13);

  // ps: the running container, short ids, its pod.
  const ps = await ok('ps', '--label', `cli-test=${TAG}`);
  assert.match(ps.split('\n')[0]!, /^CONTAINER\s+IMAGE\s+CREATED\s+STATE\s+NAME\s+ATTEMPT\s+POD ID$/);
  assert.deepEqual(tableRows(ps), [[short, BUSYBOX, tableRows(ps)[0]![2]!, 'Running', 'printer', '0', podId.slice(0, 13)]]);
  assert.match(tableRows(ps)[0]![2]!, /(second|seconds) ago$/);
  assert.equal((await ok('ps', '-q', '--pod', podId.slice(0, 8))).trim(), id);
  assert.equal((await ok('ps', '-q', '--no-trunc', '--name', '^printer$', '--label', `cli-test=${TAG}`)).trim(), id);

  // pods: ready, in the default namespace; the log directory is the kubelet's layout under our root.
  const pods = tableRows(await ok('pods', '--name', `^${podName}$`));
  assert.equal(pods.length, 1);
  assert.deepEqual(pods[0]!.slice(2, 6), ['Ready', podName, 'default', '0']);
  assert.match(pods[0]![6]!, /^\S+$/); // the runtime handler, or "(default)"
  assert.match(pods[0]![1]!, / ago$/);
  const podStatus = JSON.parse(await ok('inspectp', podId.slice(0, 10)));
  assert.equal(podStatus.status.id, podId);
  assert.equal(podStatus.status.state, 'SANDBOX_READY');
  assert.equal((await ok('pods', '-q', '--state', 'ready', '--label', `cli-test=${TAG}`)).trim(), podId);

  // logs: stdout and stderr apart, the partial "no-" joined with "newline".
  const logs = await waitFor('all log lines', async () => {
    const res = await nodelet('logs', short);
    return res.code === 0 && res.stdout.includes('no-newline') ? res : undefined;
  });
  assert.equal(logs.stdout, 'line-1\nline-2\nno-newline\n');
  assert.equal(logs.stderr, 'oops\n');
  assert.equal(await ok('logs', '--tail', '1', short), 'no-newline\n');
  // --tail counts lines of both streams: line-2, oops, no-newline.
  const stamped = await nodelet('logs', '--timestamps', '--tail', '3', id);
  const TS = '\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?(Z|[+-]\\d{2}:\\d{2})';
  assert.match(stamped.stdout, new RegExp(`^${TS} line-2\\n${TS} no-newline\\n$`));
  assert.match(stamped.stderr, new RegExp(`^${TS} oops\\n$`));
  const inspected = JSON.parse(await ok('inspect', short));
  assert.equal(inspected.status.id, id);
  assert.equal(inspected.status.state, 'CONTAINER_RUNNING');
  assert.equal(inspected.status.log_path, path.join(logRoot, `default_${podName}_${podStatus.status.metadata.uid}`, 'printer', '0.log'));

  // exec: output passed through, exit code kept, command flags not taken as ours.
  const echo = await nodelet('exec', short, 'sh', '-c', 'echo "$GREETING"; echo to-stderr >&2');
  assert.deepEqual(echo, { code: 0, stdout: 'hi there\n', stderr: 'to-stderr\n' });
  assert.equal((await nodelet('exec', short, 'sh', '-c', 'exit 7')).code, 7);
  assert.equal(await ok('exec', '--timeout', '10', short, '--', 'ls', '-d', '/etc'), '/etc\n');

  // rm refuses a running container without -f.
  const refused = await nodelet('rm', short);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^nodelet: container [0-9a-f]+ is running/);

  // stop: gone from ps, Exited with -a; then rm.
  assert.equal(await ok('stop', '--timeout', '2', short), `${id}\n`);
  assert.equal((await ok('ps', '-q', '--label', `cli-test=${TAG}`)).trim(), '');
  assert.equal(tableRows(await ok('ps', '-a', '--label', `cli-test=${TAG}`))[0]![3], 'Exited');
  assert.equal(await ok('rm', short), `${id}\n`);
  assert.equal((await ok('ps', '-a', '-q', '--label', `cli-test=${TAG}`)).trim(), '');

  // Unknown ids and prefixes are errors with the runtime's or our message.
  const gone = await nodelet('inspect', id);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /^nodelet: /);

  assert.match(await ok('rmp', '-f', podId.slice(0, 12)), new RegExp(`Removed sandbox ${podId}`));
  assert.equal((await ok('pods', '-q', '--label', `cli-test=${TAG}`)).trim(), '');
});

test('run -f spec.yaml; logs -f follows until the container exits', async () => {
  const spec = {
    pod: { metadata: { name: `cli-ticker-${TAG}`, namespace: 'cli-test' }, labels: { 'cli-test': TAG } },
    container: {
      metadata: { name: 'ticker' },
      labels: { 'cli-test': TAG },
      image: { image: BUSYBOX },
      command: ['sh', '-c', 'for i in 1 2 3 4; do echo tick-$i; sleep 0.4; done; echo bye >&2'],
    },
  };
  const specFile = path.join(logRoot, 'ticker.yaml');
  await fsp.writeFile(specFile, YAML.stringify(spec));
  const id = (await ok('run', '--log-root', logRoot, '-f', specFile)).trim();
  assert.match(id, /^[0-9a-f]{64}$/);
  // Follows from the start (the file may not hold every line yet) to the exit.
  const follower = spawnChild(process.execPath, [BIN, '-r', `unix://${d.socket}`, 'logs', '-f', id.slice(0, 13)], { timeout: 30_000, stdin: 'ignore', stripFinalNewline: false });
  const res = await follower;
  assert.equal(res.exitCode, 0, String(res.stderr));
  assert.equal(res.stdout, 'tick-1\ntick-2\ntick-3\ntick-4\n');
  assert.equal(res.stderr, 'bye\n');
  const exited = tableRows(await ok('ps', '-a', '--label', `cli-test=${TAG}`));
  assert.equal(exited[0]![3], 'Exited');
  const [pod] = (await ok('pods', '-q', '--label', `cli-test=${TAG}`)).trim().split('\n');
  await ok('stopp', pod!);
  assert.equal(tableRows(await ok('pods', '--label', `cli-test=${TAG}`))[0]![2], 'NotReady');
  await ok('rmp', pod!);
});

test('usage errors exit 2; rmi removes the image', async () => {
  const usage = await nodelet('run');
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /^nodelet: run needs an argument/);
  // The image is in use until every pod is gone.
  await ok('rmp', '-f', '-a');
  assert.equal((await ok('pods', '-q')).trim(), '');
  assert.match(await ok('rmi', BUSYBOX), new RegExp(`Deleted: ${BUSYBOX.replace(/[.]/g, '\\.')}`));
  assert.ok(!(await ok('images')).includes(`${reg.plain}/nodelet-test/busybox `));
  assert.equal((await ok('images', '-q', BUSYBOX)).trim(), '');
  assert.equal((await nodelet('rmi', BUSYBOX)).code, 1);
});
