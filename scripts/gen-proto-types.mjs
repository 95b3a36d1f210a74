// Generates TypeScript types for proto/api.proto and makes their relative imports ESM-valid (.js suffix).
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync, statSync, rmSync } from 'node:fs';
import path from 'node:path';

const out = 'src/cri/generated';
rmSync(out, { recursive: true, force: true });
execFileSync(process.execPath, [
  'node_modules/@grpc/proto-loader/build/bin/proto-loader-gen-types.js',
  '--grpcLib=@grpc/grpc-js', '--keepCase', '--longs=Number', '--enums=String', '--defaults', '--oneofs',
  `--outDir=${out}`, 'proto/api.proto',
], { stdio: ['ignore', 'ignore', 'inherit'] });

function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (p.endsWith('.ts')) {
      const text = readFileSync(p, 'utf8').replace(/from '(\.{1,2}\/[^']+)'/g, (m, spec) => (spec.endsWith('.js') ? m : `from '${spec}.js'`));
      writeFileSync(p, text);
    }
  }
}
walk(out);
