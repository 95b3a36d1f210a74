// A child program run inside a pod's network namespace (`nsenter --net=… node netns-dial.js HOST PORT`):
// relays stdin/stdout to one TCP connection. Unlike socat it ends stdout as soon as the pod side
// closes, and keeps reading after our stdin ended (a client's half-close), as the kubelet does.
import net from 'node:net';

const [host = '127.0.0.1', portText = ''] = process.argv.slice(2);
const port = Number(portText);
const socket = net.connect({ host, port });
socket.once('connect', () => {
  process.stdin.pipe(socket);
  socket.pipe(process.stdout);
});
socket.once('end', () => process.stdout.end());
socket.once('close', () => process.stdout.end(() => process.exit(0)));
socket.once('error', (err: NodeJS.ErrnoException) => {
  process.stderr.write(`dial tcp4 ${host}:${port}: connect: ${err.code === 'ECONNREFUSED' ? 'connection refused' : err.message}\n`);
  process.exit(1);
});
process.stdout.on('error', () => process.exit(0));
