// Reading a rootfs file as the container sees it: links resolved inside the root, regular files only, capped.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { NEEDS_MOUNT, readLayeredFile, readRootfsFile, resolveInRootfs } from '../../src/runtime/rootfs-files.js';

let base: string;
let root: string;

before(async () => {
  base = await fsp.mkdtemp(path.join(os.tmpdir(), 'nodelet-rootfs-files-'));
  root = path.join(base, 'rootfs');
  await fsp.mkdir(path.join(root, 'etc'), { recursive: true });
  await fsp.mkdir(path.join(root, 'data'));
  await fsp.writeFile(path.join(root, 'data', 'passwd'), 'inside\n');
  // The same name outside the rootfs: what following a link on the host would read.
  await fsp.mkdir(path.join(base, 'data'));
  await fsp.writeFile(path.join(base, 'data', 'passwd'), 'outside\n');
  await fsp.symlink('/data/passwd', path.join(root, 'etc', 'absolute'));
  await fsp.symlink('../../../../../../data/passwd', path.join(root, 'etc', 'climbing'));
  await fsp.symlink('../data', path.join(root, 'etc', 'dirlink'));
  await fsp.symlink('loop-b', path.join(root, 'etc', 'loop-a'));
  await fsp.symlink('loop-a', path.join(root, 'etc', 'loop-b'));
  await fsp.symlink('/nowhere', path.join(root, 'etc', 'dangling'));
  execFileSync('mkfifo', [path.join(root, 'etc', 'fifo')]);
  await fsp.writeFile(path.join(root, 'etc', 'big'), 'x'.repeat(100));
});

after(async () => {
  if (base) await fsp.rm(base, { recursive: true, force: true });
});

test('absolute and climbing links resolve inside the rootfs', async () => {
  assert.equal(await readRootfsFile(root, '/etc/absolute'), 'inside\n');
  assert.equal(await readRootfsFile(root, '/etc/climbing'), 'inside\n');
  assert.equal(await readRootfsFile(root, '/../../etc/dirlink/passwd'), 'inside\n');
  assert.equal(await resolveInRootfs(root, '/etc/climbing'), path.join(root, 'data', 'passwd'));
});

test('absent, dangling and through-a-file paths read as absent', async () => {
  assert.equal(await readRootfsFile(root, '/etc/none'), undefined);
  assert.equal(await readRootfsFile(root, '/etc/dangling'), undefined);
  assert.equal(await readRootfsFile(root, '/etc/big/passwd'), undefined);
});

test('a FIFO, a directory or a link loop is refused at once; a file over the cap too', async () => {
  await assert.rejects(readRootfsFile(root, '/etc/fifo'), /\/etc\/fifo in the image is not a regular file \(a FIFO\)/);
  await assert.rejects(readRootfsFile(root, '/etc'), /a directory/);
  await assert.rejects(readRootfsFile(root, '/etc/loop-a'), /too many levels of symbolic links/);
  await assert.rejects(readRootfsFile(root, '/etc/big', 99), /100 bytes, more than the 99 allowed/);
  assert.equal((await readRootfsFile(root, '/etc/big', 100))?.length, 100);
});

test('a device node is refused without being opened', async () => {
  // Refused on its lstat, before any open (opening some devices acts, e.g. a watchdog arms).
  execFileSync('mknod', [path.join(root, 'etc', 'device'), 'c', '1', '7']);
  await assert.rejects(readRootfsFile(root, '/etc/device'), /not a regular file \(a character device\)/);
});

test('a file read from the layers (top first) is what the mounted overlay shows: top entry wins, whiteouts hide, opaque dirs cut', async () => {
  const layer = async (name: string, files: Record<string, string | 'whiteout' | 'dir'>) => {
    const dir = path.join(base, 'layers', name);
    for (const [rel, content] of Object.entries(files)) {
      const p = path.join(dir, rel);
      await fsp.mkdir(path.dirname(p), { recursive: true });
      if (content === 'dir') await fsp.mkdir(p, { recursive: true });
      else if (content === 'whiteout') execFileSync('mknod', [p, 'c', '0', '0']);
      else await fsp.writeFile(p, content);
    }
    return dir;
  };
  const bottom = await layer('bottom', { 'etc/passwd': 'bottom\n', 'etc/group': 'bottom-group\n', 'etc/hosts': 'bottom-hosts\n', 'var/x': 'x' });
  const middle = await layer('middle', { 'etc/passwd': 'middle\n', 'etc/group': 'whiteout' });
  const opaque = await layer('opaque', { 'etc/other': 'o' });
  const linked = await layer('linked', { 'var/link': 'dir' });
  await fsp.symlink('/etc/passwd', path.join(linked, 'etc-link'));
  const l = (dir: string, opaqueDirs: string[] | undefined = []) => ({ dir, opaqueDirs });

  assert.equal(await readLayeredFile([l(middle), l(bottom)], '/etc/passwd'), 'middle\n', 'the top layer with the name wins');
  assert.equal(await readLayeredFile([l(middle), l(bottom)], '/etc/group'), undefined, 'a whiteout hides the lower file');
  assert.equal(await readLayeredFile([l(middle), l(bottom)], '/etc/hosts'), 'bottom-hosts\n', 'directories merge');
  assert.equal(await readLayeredFile([l(opaque, ['etc']), l(middle), l(bottom)], '/etc/passwd'), undefined, 'an opaque directory hides what is below');
  assert.equal(await readLayeredFile([l(opaque, ['var']), l(middle), l(bottom)], '/etc/passwd'), 'middle\n', 'another opaque directory does not');
  assert.equal(await readLayeredFile([l(bottom)], '/etc/nothing'), undefined);
  assert.equal(await readLayeredFile([l(bottom)], '/var/x/y'), undefined, 'through a file is absent');
  assert.equal(await readLayeredFile([l(linked), l(bottom)], '/etc-link'), NEEDS_MOUNT, 'a symbolic link is left to the mounted overlay');
  assert.equal(await readLayeredFile([{ dir: middle }, l(bottom)], '/etc/passwd'), NEEDS_MOUNT, 'unknown opaque dirs need the mount');
  await assert.rejects(readLayeredFile([l(bottom)], '/var'), /not a regular file/);
});
