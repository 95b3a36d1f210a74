// ImageService RPCs: validate the request shape, call the image domain, shape the response.
import type { EncodedMessage, ServiceHandlers } from './server.js';
import type { ImageService } from '../image/image-service.js';
import type { RegistryCredentials } from '../image/registry.js';
import { invalidArgument } from '../common/errors.js';
import { criServices } from './grpc.js';
import { imageListItems, imageMessage } from './list-responses.js';
import type { AuthConfig__Output } from './generated/runtime/v1/AuthConfig.js';
import type { ImageStatusRequest__Output } from './generated/runtime/v1/ImageStatusRequest.js';
import type { ImageStatusResponse } from './generated/runtime/v1/ImageStatusResponse.js';
import type { ListImagesRequest__Output } from './generated/runtime/v1/ListImagesRequest.js';
import type { ListImagesResponse } from './generated/runtime/v1/ListImagesResponse.js';
import type { PullImageRequest__Output } from './generated/runtime/v1/PullImageRequest.js';
import type { PullImageResponse } from './generated/runtime/v1/PullImageResponse.js';
import type { RemoveImageRequest__Output } from './generated/runtime/v1/RemoveImageRequest.js';
import type { RemoveImageResponse } from './generated/runtime/v1/RemoveImageResponse.js';
import type { ImageFsInfoResponse } from './generated/runtime/v1/ImageFsInfoResponse.js';
import type { ImageSpec__Output } from './generated/runtime/v1/ImageSpec.js';

function requireImage(spec: ImageSpec__Output | null | undefined): string {
  const image = spec?.image?.trim() ?? '';
  if (!image) throw invalidArgument('image.image must name an image (reference or id)');
  return image;
}

/** Registry credentials from a CRI AuthConfig; undefined when it carries none. */
export function credentialsFrom(auth: AuthConfig__Output | null | undefined): RegistryCredentials | undefined {
  if (!auth) return undefined;
  const creds: RegistryCredentials = {};
  if (auth.username) creds.username = auth.username;
  if (auth.password) creds.password = auth.password;
  if (auth.auth) creds.auth = auth.auth;
  if (auth.identity_token) creds.identityToken = auth.identity_token;
  if (auth.registry_token) creds.registryToken = auth.registry_token;
  return Object.keys(creds).length > 0 ? creds : undefined;
}

function nowNanos(): string {
  return (BigInt(Date.now()) * 1_000_000n).toString();
}

export function imageHandlers(service: ImageService): ServiceHandlers {
  const imageItems = imageListItems(criServices().image.ListImages.responseSerialize);
  return {
    unary: {
      async ListImages(req: ListImagesRequest__Output): Promise<ListImagesResponse | EncodedMessage> {
        const wanted = req.filter?.image?.image?.trim();
        return imageItems.response(service.list(wanted ? { image: { image: wanted } } : undefined));
      },

      async ImageStatus(req: ImageStatusRequest__Output): Promise<ImageStatusResponse | EncodedMessage> {
        const image = requireImage(req.image);
        const record = service.status(image);
        if (!record) return { image: null, info: {} };
        if (!req.verbose) return imageItems.message(record);
        const info: Record<string, string> = {
          info: JSON.stringify({
            id: record.id,
            manifestDigest: record.manifestDigest,
            chainID: service.chainId(record),
            layers: record.layers,
            createdAt: record.createdAt,
            imageSpec: record.config,
          }),
        };
        return { image: imageMessage(record), info };
      },

      async PullImage(req: PullImageRequest__Output, ctx): Promise<PullImageResponse> {
        const image = requireImage(req.image);
        const record = await service.pull(image, credentialsFrom(req.auth), ctx.signal);
        // Encoded now, once per pulled record, rather than by the status and list calls that follow.
        imageItems.entryOf(record);
        return { image_ref: record.id };
      },

      async RemoveImage(req: RemoveImageRequest__Output): Promise<RemoveImageResponse> {
        const image = requireImage(req.image);
        await service.remove(image);
        return {};
      },

      async ImageFsInfo(): Promise<ImageFsInfoResponse> {
        const usage = await service.fsInfo();
        return {
          image_filesystems: [
            {
              timestamp: nowNanos(),
              fs_id: { mountpoint: usage.mountpoint },
              used_bytes: { value: usage.bytes },
              inodes_used: { value: usage.inodes },
            },
          ],
          container_filesystems: [],
        };
      },
    },
  };
}
