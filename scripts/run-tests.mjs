#!/usr/bin/env node
// The test command: builds/loads the fixture images, starts the test registries once for
// the whole run, runs every dist/test/**/*.test.js with node:test (unit first, then
// integration, then the rest), stops the registries and exits with the runner's code.
// Run after `tsc` has built dist/. Arguments, when given, filter the test files by path
// substring (e.g. `node scripts/run-tests.mjs unit/` or `... test/integration/registries.test.ts`).
// A skipped test fails the run (nothing the tests need is optional).
// Every failed test is listed again at the end (the TAP stream is long, and CI logs show its tail);
// with NODELET_TEST_FAILURES_FILE set, the list is also appended to that file (scripts/test-all prints it last).
// Env: NODELET_TEST_CONCURRENCY (files in parallel, default 1), NODELET_TEST_TIMEOUT_MS (per test, default 20 min).
//
// node:test's run() is what `node --test` uses underneath; it is called directly because
// Node 20's `node --test <files>` sorts the files by name, which would put integration first.
import { promises as fsp } from 'node:fs';
import { run } from 'node:test';
import { tap } from 'node:test/reporters';
import { finished } from 'node:stream/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const distTest = path.join(repoRoot, 'dist', 'test');
const REGISTRIES_ENV = 'NODELET_TEST_REGISTRIES';
const DEFAULT_TEST_TIMEOUT_MS = 20 * 60 * 1000;

const say = (msg) => process.stderr.write(`run-tests: ${msg}\n`);

async function findTestFiles(dir) {
  const found = [];
  let entries;
  try {
    entries = await fsp.readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (err.code === 'ENOENT') return found;
    throw err;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) found.push(...(await findTestFiles(p)));
    else if (e.isFile() && e.name.endsWith('.test.js')) found.push(p);
  }
  return found;
}

function suiteRank(file) {
  const rel = path.relative(distTest, file);
  if (rel.startsWith(`unit${path.sep}`)) return 0;
  if (rel.startsWith(`integration${path.sep}`)) return 1;
  return 2;
}

function matchesFilter(file, filters) {
  if (filters.length === 0) return true;
  const rel = path.relative(repoRoot, file);
  return filters.some((f) => {
    const wanted = f.replace(/^\.\//, '').replace(/^dist\//, '').replace(/\.ts$/, '.js');
    return rel.includes(wanted);
  });
}

async function main() {
  const filters = process.argv.slice(2);
  const all = await findTestFiles(distTest);
  if (all.length === 0) {
    say(`no test files under ${distTest}; build first (npx tsc -p .)`);
    return 1;
  }
  const files = all
    .filter((f) => matchesFilter(f, filters))
    .sort((a, b) => suiteRank(a) - suiteRank(b) || a.localeCompare(b));
  if (files.length === 0) {
    say(`no test files match ${filters.join(' ')}`);
    return 1;
  }

  let registries;
  let registriesDir;
  let stopping;
  const abort = new AbortController();

  const cleanUp = async () => {
    stopping ??= (async () => {
      if (registries) {
        try {
          await registries.stop();
        } catch (err) {
          say(`stopping registries: ${err?.message ?? err}`);
        }
      }
      if (registriesDir) await fsp.rm(registriesDir, { recursive: true, force: true });
    })();
    return stopping;
  };

  for (const [signal, number] of [['SIGINT', 2], ['SIGTERM', 15]]) {
    process.on(signal, () => {
      say(`${signal}: stopping tests and registries`);
      abort.abort();
      void cleanUp().finally(() => process.exit(128 + number));
    });
  }

  try {
    const needsRegistries = files.some((f) => suiteRank(f) > 0) && !process.env[REGISTRIES_ENV];
    if (needsRegistries) {
      const started = Date.now();
      const helpers = await import(pathToFileURL(path.join(distTest, 'helpers', 'registries.js')).href);
      registries = await helpers.startRegistries();
      registriesDir = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-test-run-'));
      const file = path.join(registriesDir, 'registries.json');
      await fsp.writeFile(file, JSON.stringify(helpers.describeRegistries(registries), null, 1));
      process.env[REGISTRIES_ENV] = file;
      say(
        `registries up in ${Date.now() - started} ms (plain ${registries.plain}, basic ${registries.basic.host}, ` +
          `bearer ${registries.bearer.host}, tamper ${registries.tamper})`,
      );
    }
    return await runFiles(files, abort.signal);
  } finally {
    await cleanUp();
  }
}

async function runFiles(files, signal) {
  const options = { files, signal, concurrency: Number(process.env.NODELET_TEST_CONCURRENCY || 1) };
  // A test that hangs fails after this instead of holding the whole run until CI's own limit.
  options.timeout = Number(process.env.NODELET_TEST_TIMEOUT_MS || DEFAULT_TEST_TIMEOUT_MS);
  say(`running ${files.length} test file(s)`);
  let failed = false;
  // A skipped test proved nothing: every tool and privilege the tests need is required (scripts/setup, root).
  const skipped = [];
  const failures = [];
  const stream = run(options);
  stream.on('test:fail', (data) => {
    if (data.todo) return;
    failed = true;
    failures.push(describeFailure(data));
  });
  stream.on('test:pass', (data) => {
    if (data.skip !== undefined && data.skip !== false) skipped.push(`${data.name}${typeof data.skip === 'string' ? ` (${data.skip})` : ''}`);
  });
  const report = stream.compose(tap);
  report.pipe(process.stdout, { end: false });
  await finished(report);
  if (failures.length > 0) {
    const listing = `${failures.length} failed test(s) on Node.js ${process.version}:\n  ${failures.join('\n  ')}`;
    say(listing);
    if (process.env.NODELET_TEST_FAILURES_FILE) await fsp.appendFile(process.env.NODELET_TEST_FAILURES_FILE, `${listing}\n`);
  }
  if (skipped.length > 0) {
    say(`${skipped.length} skipped test(s) fail the run:\n  ${skipped.join('\n  ')}`);
    return 1;
  }
  return failed ? 1 : 0;
}

// One line per failure: file, test name, the error's first line. A suite that failed only because a
// subtest did is left out (the subtest has its own line).
function describeFailure(data) {
  const file = data.file ? path.relative(repoRoot, data.file) : '?';
  const error = data.details?.error;
  if (error?.failureType === 'subtestsFailed') return `${file}: ${data.name}: (a subtest failed)`;
  const cause = error?.cause ?? error;
  const message = String(cause?.message ?? cause ?? 'failed').split('\n')[0].slice(0, 300);
  return `${file}: ${data.name}: ${message}`;
}

main().then(
  (code) => process.exit(code),
  async (err) => {
    say(`failed: ${err?.stack ?? err}`);
    process.exit(1);
  },
);
