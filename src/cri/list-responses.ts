// ListContainers, ListPodSandbox and ListImages answers. A list item's wire bytes depend only on fields that
// never change after creation plus its state (or names), so each record's encoded entry is kept and reused;
// an answer is the concatenation of its items' entries (a repeated field is its entries one after another).
import type { SandboxRecord, ContainerRecord } from '../runtime/records.js';
import type { ImageRecord } from '../image/image-service.js';
import type { Image } from './generated/runtime/v1/Image.js';
import { EncodedMessage } from './server.js';

/** A response serializer of the service definition (its typed request is the generated type). */
type Serialize = (value: any) => Buffer;

export function containerMessage(rec: ContainerRecord) {
  return {
    id: rec.id,
    pod_sandbox_id: rec.sandboxId,
    metadata: rec.config.metadata,
    image: { image: rec.imageName },
    image_ref: rec.imageRef,
    image_id: rec.imageId,
    state: rec.state,
    created_at: rec.createdAt,
    labels: rec.config.labels,
    annotations: rec.config.annotations,
  };
}

export function podSandboxMessage(rec: SandboxRecord) {
  return {
    id: rec.id,
    metadata: rec.config.metadata,
    state: rec.state,
    created_at: rec.createdAt,
    labels: rec.config.labels,
    annotations: rec.config.annotations,
    runtime_handler: rec.runtimeHandler,
  };
}

/** The user an image runs as: a numeric uid, or a name (the user part of "user:group"). */
export function imageUser(user: string | undefined): { uid?: number; username: string } {
  const name = (user ?? '').split(':')[0] ?? '';
  if (name === '') return { username: '' };
  if (/^\d+$/.test(name)) return { uid: Number(name), username: '' };
  return { username: name };
}

export function imageMessage(record: ImageRecord): Image {
  const user = imageUser(record.config.config?.User);
  return {
    id: record.id,
    repo_tags: record.repoTags,
    repo_digests: record.repoDigests,
    size: record.size,
    uid: user.uid !== undefined ? { value: user.uid } : null,
    username: user.username,
    spec: { image: record.id, annotations: {} },
    pinned: record.pinned,
  };
}

/** What an item's message is built from; an entry is reused while every part is the same (===). */
export function containerMessageInputs(rec: ContainerRecord): unknown[] {
  return [rec.id, rec.sandboxId, rec.config, rec.imageName, rec.imageRef, rec.imageId, rec.state, rec.createdAt];
}

export function podSandboxMessageInputs(rec: SandboxRecord): unknown[] {
  return [rec.id, rec.config, rec.state, rec.createdAt, rec.runtimeHandler];
}

/** The image store replaces a record's arrays (never edits them) when its names change. */
export function imageMessageInputs(rec: ImageRecord): unknown[] {
  return [rec.id, rec.repoTags, rec.repoDigests, rec.size, rec.pinned, rec.config];
}

interface Entry {
  inputs: unknown[];
  bytes: Buffer;
}

/**
 * A kept entry in memory of its own: a small encoder output is a slice of node's shared 8 KiB pool, and
 * keeping the slice would keep the whole pool chunk alive for as long as the record lives.
 */
function ownMemory(bytes: Buffer): Buffer {
  if (bytes.byteLength === bytes.buffer.byteLength) return bytes;
  const own = Buffer.allocUnsafeSlow(bytes.length);
  bytes.copy(own);
  return own;
}

function sameInputs(a: unknown[], b: unknown[]): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * The encoded field-1 entry of each record, by record object (a record read again after a restart is a
 * new object; a removed one is collected with it). Checked against the record's inputs on every use, so
 * a change of state, however it was made (in place or by a new record), is never answered stale. An entry
 * may also be a whole answer of its own (an image's ImageStatus, a container's ContainerStatus).
 */
export class EncodedListItems<R extends object> {
  private readonly entries = new WeakMap<R, Entry>();

  /**
   * @param encodeOne the response serializer applied to a response holding just this one item: its
   *   bytes are exactly the item's entry in a longer list.
   */
  constructor(
    private readonly encodeOne: (rec: R) => Buffer,
    private readonly inputsOf: (rec: R) => unknown[],
  ) {}

  entryOf(rec: R): Buffer {
    const inputs = this.inputsOf(rec);
    const cached = this.entries.get(rec);
    if (cached && sameInputs(cached.inputs, inputs)) return cached.bytes;
    const bytes = ownMemory(this.encodeOne(rec));
    this.entries.set(rec, { inputs, bytes });
    return bytes;
  }

  /** A response holding just this record: its entry, as a message of its own. */
  message(rec: R): EncodedMessage {
    return new EncodedMessage(this.entryOf(rec));
  }

  /** The last answer and its entries: the kubelet's relist asks the same unfiltered list every second. */
  private last?: { parts: Buffer[]; message: EncodedMessage };

  /** The encoded response listing `records`, in their order. */
  response(records: readonly R[]): EncodedMessage {
    const parts = new Array<Buffer>(records.length);
    let length = 0;
    for (let i = 0; i < records.length; i++) {
      parts[i] = this.entryOf(records[i]!);
      length += parts[i]!.length;
    }
    const last = this.last;
    if (last && last.parts.length === parts.length && parts.every((p, i) => p === last.parts[i])) return last.message;
    const message = new EncodedMessage(Buffer.concat(parts, length));
    this.last = { parts, message };
    return message;
  }
}

export function containerListItems(serializeResponse: Serialize): EncodedListItems<ContainerRecord> {
  return new EncodedListItems((rec) => serializeResponse({ containers: [containerMessage(rec)] }), containerMessageInputs);
}

export function podSandboxListItems(serializeResponse: Serialize): EncodedListItems<SandboxRecord> {
  return new EncodedListItems((rec) => serializeResponse({ items: [podSandboxMessage(rec)] }), podSandboxMessageInputs);
}

/**
 * An image's entry in ListImagesResponse (field 1, repeated Image) is also, byte for byte, an
 * ImageStatusResponse holding that image (field 1, Image) and no info: one cache answers both calls.
 */
export function imageListItems(serializeResponse: Serialize): EncodedListItems<ImageRecord> {
  return new EncodedListItems((rec) => serializeResponse({ images: [imageMessage(rec)] }), imageMessageInputs);
}
