// The CRI client the tests use: the shared one (src/cri-client), no default deadlines.
import { CriClient } from '../../src/cri-client/client.js';

export { CriClient };

export function connectCri(socket: string): CriClient {
  return new CriClient(socket.startsWith('unix:') ? socket : `unix://${socket}`);
}
