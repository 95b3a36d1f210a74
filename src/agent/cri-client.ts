// The agent's CRI client: the shared one (src/cri-client) with the agent's default deadlines.
import { CriClient as SharedCriClient } from '../cri-client/client.js';

export { isGrpcNotFound, type CriCallObserver, type CriCallOptions } from '../cri-client/client.js';

export class CriClient extends SharedCriClient {
  constructor(endpoint: string) {
    super(endpoint.startsWith('unix:') ? endpoint : `unix://${endpoint}`, { runtimeDeadlineMs: 120_000, imageDeadlineMs: 600_000 });
  }
}
