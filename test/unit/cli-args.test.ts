// CLI argument handling: global flags, verbatim tails, ports, run specs, id prefixes, exit codes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { parseCommandArgs, splitVerbatim, UsageError } from '../../src/cli/command.js';
import { DEFAULT_ENDPOINT, resolveEndpoint } from '../../src/cli/client.js';
import { EXIT_FAILURE, EXIT_USAGE, parseGlobalArgs, runCli } from '../../src/cli/main.js';
import { completeSpec, nameFromImage, parsePortMapping, podLogDirectory, runCommand, specFromFlags } from '../../src/cli/commands/run.js';
import { execCommand } from '../../src/cli/commands/exec.js';
import { matchIdPrefix } from '../../src/cli/resolve.js';

test('global flags come before the command', () => {
  assert.deepEqual(parseGlobalArgs(['-r', 'unix:///x.sock', 'ps', '-a']), { endpoint: 'unix:///x.sock', help: false, version: false, command: 'ps', rest: ['-a'] });
  assert.deepEqual(parseGlobalArgs(['--runtime-endpoint=/y.sock', '--help']), { endpoint: '/y.sock', help: true, version: false, rest: [] });
  assert.throws(() => parseGlobalArgs(['-r']), UsageError);
  assert.throws(() => parseGlobalArgs(['--nope', 'ps']), UsageError);
});

test('endpoint: flag, then NODELET_ENDPOINT, then CONTAINER_RUNTIME_ENDPOINT, then the default', () => {
  assert.equal(resolveEndpoint('unix:///a.sock', { NODELET_ENDPOINT: 'unix:///b.sock' }), 'unix:///a.sock');
  assert.equal(resolveEndpoint(undefined, { NODELET_ENDPOINT: 'unix:///b.sock', CONTAINER_RUNTIME_ENDPOINT: 'unix:///c.sock' }), 'unix:///b.sock');
  assert.equal(resolveEndpoint(undefined, { CONTAINER_RUNTIME_ENDPOINT: 'unix:///c.sock' }), 'unix:///c.sock');
  assert.equal(resolveEndpoint(undefined, {}), DEFAULT_ENDPOINT);
  assert.equal(resolveEndpoint('/run/x.sock', {}), 'unix:///run/x.sock');
});

test('the command line of exec and run is taken verbatim', () => {
  const opts = { timeout: { type: 'string' as const, description: '' }, tty: { type: 'boolean' as const, short: 't', description: '' } };
  assert.deepEqual(splitVerbatim(['--timeout', '5', 'abc', 'ls', '-l', '--timeout'], opts, 1), { head: ['--timeout', '5', 'abc'], tail: ['ls', '-l', '--timeout'] });
  assert.deepEqual(splitVerbatim(['abc', '--', 'ls', '-l'], opts, 1), { head: ['abc'], tail: ['ls', '-l'] });
  assert.deepEqual(splitVerbatim(['-t', 'abc'], opts, 1), { head: ['-t', 'abc'], tail: [] });
  const args = parseCommandArgs(execCommand, ['--timeout=3', 'abc', 'sh', '-c', 'echo hi']);
  assert.deepEqual(args.positionals, ['abc']);
  assert.deepEqual(args.verbatim, ['sh', '-c', 'echo hi']);
  assert.equal(args.int('timeout'), 3);
  assert.throws(() => parseCommandArgs(execCommand, ['--bogus', 'abc']), UsageError);
});

test('port mappings', () => {
  assert.deepEqual(parsePortMapping('8080:80'), { host_port: 8080, container_port: 80, protocol: 'TCP' });
  assert.deepEqual(parsePortMapping('127.0.0.1:53:53/udp'), { host_ip: '127.0.0.1', host_port: 53, container_port: 53, protocol: 'UDP' });
  for (const bad of ['80', '0:80', 'a:80', '1:2:3:4', '80:80/icmp', '80:70000']) assert.throws(() => parsePortMapping(bad), UsageError, bad);
});

test('run spec from flags, completed with names, uid and log paths', () => {
  assert.equal(nameFromImage('127.0.0.1:5000/nodelet-test/busybox:latest'), 'busybox');
  assert.equal(nameFromImage('reg/x/My_App@sha256:abc'), 'my-app');
  const args = parseCommandArgs(runCommand, ['--namespace', 'team', '--env', 'A=1', '-e', 'B=x=y', '-p', '8080:80', '--host-network', 'reg/busybox:1', 'sh', '-c', 'echo $A']);
  const spec = completeSpec(specFromFlags(args), '/logs');
  assert.equal(spec.container.metadata?.name, 'busybox');
  assert.deepEqual(spec.container.args, ['sh', '-c', 'echo $A']);
  assert.deepEqual(spec.container.envs, [{ key: 'A', value: '1' }, { key: 'B', value: 'x=y' }]);
  assert.equal(spec.container.log_path, 'busybox/0.log');
  assert.match(spec.pod.metadata!.name!, /^busybox-[0-9a-f]{6}$/);
  assert.equal(spec.pod.metadata!.namespace, 'team');
  assert.equal(spec.pod.log_directory, podLogDirectory('/logs', 'team', spec.pod.metadata!.name!, spec.pod.metadata!.uid!));
  assert.match(spec.pod.log_directory!, /^\/logs\/team_busybox-[0-9a-f]{6}_[0-9a-f-]{36}\/$/);
  assert.equal(spec.pod.linux?.security_context?.namespace_options?.network, 'NODE');
  assert.deepEqual(spec.pod.port_mappings, [{ host_port: 8080, container_port: 80, protocol: 'TCP' }]);
  // A spec file's own values stay.
  const kept = completeSpec({ pod: { metadata: { name: 'p', namespace: 'n', uid: 'u' }, log_directory: '/x' }, container: { metadata: { name: 'c', attempt: 2 }, image: { image: 'i' }, log_path: 'c.log' } }, '/logs');
  assert.equal(kept.pod.log_directory, '/x');
  assert.equal(kept.container.log_path, 'c.log');
  const defaulted = completeSpec({ pod: { metadata: { name: 'p', namespace: 'n', uid: 'u' } }, container: { metadata: { name: 'c', attempt: 2 }, image: { image: 'i' } } }, '/logs');
  assert.equal(defaulted.pod.log_directory, '/logs/n_p_u/');
  assert.equal(defaulted.container.log_path, 'c/2.log');
});

test('id prefixes resolve to one id, or fail', () => {
  const ids = ['abc123', 'abd456', 'ffff'];
  assert.equal(matchIdPrefix('abc', ids, 'container'), 'abc123');
  assert.equal(matchIdPrefix('ffff', ids, 'container'), 'ffff');
  assert.throws(() => matchIdPrefix('ab', ids, 'container'), /ambiguous/);
  assert.throws(() => matchIdPrefix('zz', ids, 'container'), /no container matches/);
  assert.throws(() => matchIdPrefix('', ids, 'container'), /empty/);
});

async function cli(argv: string[], env: NodeJS.ProcessEnv = {}) {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (b: Buffer) => out.push(b));
  stderr.on('data', (b: Buffer) => err.push(b));
  const code = await runCli(argv, { stdout, stderr, env });
  return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
}

test('exit codes: help 0, usage errors 2, failures to reach the runtime 1', async () => {
  const help = await cli(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /Commands:[\s\S]*\bps\b/);
  const psHelp = await cli(['ps', '--help']);
  assert.equal(psHelp.code, 0);
  assert.match(psHelp.stdout, /Usage: nodelet ps/);
  assert.match(psHelp.stdout, /--no-trunc/);
  assert.equal((await cli([])).code, EXIT_USAGE);
  const unknown = await cli(['frobnicate']);
  assert.equal(unknown.code, EXIT_USAGE);
  assert.match(unknown.stderr, /^nodelet: unknown command "frobnicate"/);
  assert.equal((await cli(['ps', '--state', 'sleepy'])).code, EXIT_USAGE);
  assert.equal((await cli(['rm'])).code, EXIT_USAGE);
  assert.equal((await cli(['logs', '--tail', 'x', 'abc'])).code, EXIT_USAGE);
  const down = await cli(['-r', 'unix:///nonexistent/nodelet-cli-test.sock', 'version']);
  assert.equal(down.code, EXIT_FAILURE);
  assert.match(down.stderr, /^nodelet: .*nodelet-cli-test\.sock/);
  const viaEnv = await cli(['ps'], { NODELET_ENDPOINT: 'unix:///nonexistent/nodelet-cli-env.sock' });
  assert.equal(viaEnv.code, EXIT_FAILURE);
  assert.match(viaEnv.stderr, /nodelet-cli-env\.sock/);
});
