// Generates TypeScript types for proto/api.proto (CRI) and proto/containerd/ (containerd's API) and makes their
// relative imports ESM-valid (.js suffix).
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync, statSync, rmSync } from 'node:fs';
import path from 'node:path';

function walk(dir, fn) {
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) walk(p, fn);
    else fn(p);
  }
}

function generate(out, files, includeDirs = []) {
  rmSync(out, { recursive: true, force: true });
  execFileSync(process.execPath, [
    'node_modules/@grpc/proto-loader/build/bin/proto-loader-gen-types.js',
    '--grpcLib=@grpc/grpc-js', '--keepCase', '--longs=Number', '--enums=String', '--defaults', '--oneofs',
    ...includeDirs.map((d) => `--includeDirs=${d}`),
    `--outDir=${out}`, ...files,
  ], { stdio: ['ignore', 'ignore', 'inherit'] });
  walk(out, (p) => {
    if (!p.endsWith('.ts')) return;
    const text = readFileSync(p, 'utf8').replace(/from '(\.{1,2}\/[^']+)'/g, (m, spec) => (spec.endsWith('.js') ? m : `from '${spec}.js'`));
    writeFileSync(p, text);
  });
}

generate('src/cri/generated', ['proto/api.proto']);

// The containerd files import each other relative to proto/containerd (as upstream does relative to its api root).
const containerdRoot = 'proto/containerd';
const containerdFiles = [];
walk(containerdRoot, (p) => {
  if (p.endsWith('.proto')) containerdFiles.push(path.relative(containerdRoot, p));
});
generate('src/runtime/containerd/generated', containerdFiles.sort(), [containerdRoot]);
