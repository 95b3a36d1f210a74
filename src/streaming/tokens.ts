// Single-use random tokens naming a validated Exec/Attach/PortForward request until a client redeems it.
import { randomBytes } from 'node:crypto';

export const TOKEN_TTL_MS = 60_000;
const MAX_PENDING = 1000;

interface Entry<T> {
  value: T;
  expires: number;
}

export class TokenCache<T> {
  private readonly entries = new Map<string, Entry<T>>();
  constructor(private readonly ttlMs = TOKEN_TTL_MS) {}

  issue(value: T): string {
    this.sweep();
    if (this.entries.size >= MAX_PENDING) {
      // The oldest unredeemed request makes room (Map keeps insertion order).
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    const token = randomBytes(24).toString('base64url');
    this.entries.set(token, { value, expires: Date.now() + this.ttlMs });
    return token;
  }

  /** The request behind the token, once: a second call, an unknown or an expired token gives undefined. */
  redeem(token: string): T | undefined {
    const entry = this.entries.get(token);
    if (!entry) return undefined;
    this.entries.delete(token);
    return entry.expires >= Date.now() ? entry.value : undefined;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [token, entry] of this.entries) if (entry.expires < now) this.entries.delete(token);
  }
}
