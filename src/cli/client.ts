// The CLI's CRI connection: the shared client (src/cri-client) seen through typed calls, and how the
// endpoint is chosen.
import { CriClient as SharedCriClient, type CriCallOptions } from '../cri-client/client.js';
import type { ContainerStatusRequest } from '../cri/generated/runtime/v1/ContainerStatusRequest.js';
import type { ContainerStatusResponse__Output } from '../cri/generated/runtime/v1/ContainerStatusResponse.js';
import type { CreateContainerRequest } from '../cri/generated/runtime/v1/CreateContainerRequest.js';
import type { CreateContainerResponse__Output } from '../cri/generated/runtime/v1/CreateContainerResponse.js';
import type { ExecSyncRequest } from '../cri/generated/runtime/v1/ExecSyncRequest.js';
import type { ExecSyncResponse__Output } from '../cri/generated/runtime/v1/ExecSyncResponse.js';
import type { ImageFsInfoRequest } from '../cri/generated/runtime/v1/ImageFsInfoRequest.js';
import type { ImageFsInfoResponse__Output } from '../cri/generated/runtime/v1/ImageFsInfoResponse.js';
import type { ImageStatusRequest } from '../cri/generated/runtime/v1/ImageStatusRequest.js';
import type { ImageStatusResponse__Output } from '../cri/generated/runtime/v1/ImageStatusResponse.js';
import type { ListContainersRequest } from '../cri/generated/runtime/v1/ListContainersRequest.js';
import type { ListContainersResponse__Output } from '../cri/generated/runtime/v1/ListContainersResponse.js';
import type { ListImagesRequest } from '../cri/generated/runtime/v1/ListImagesRequest.js';
import type { ListImagesResponse__Output } from '../cri/generated/runtime/v1/ListImagesResponse.js';
import type { ListPodSandboxRequest } from '../cri/generated/runtime/v1/ListPodSandboxRequest.js';
import type { ListPodSandboxResponse__Output } from '../cri/generated/runtime/v1/ListPodSandboxResponse.js';
import type { PodSandboxStatusRequest } from '../cri/generated/runtime/v1/PodSandboxStatusRequest.js';
import type { PodSandboxStatusResponse__Output } from '../cri/generated/runtime/v1/PodSandboxStatusResponse.js';
import type { PullImageRequest } from '../cri/generated/runtime/v1/PullImageRequest.js';
import type { PullImageResponse__Output } from '../cri/generated/runtime/v1/PullImageResponse.js';
import type { RemoveContainerRequest } from '../cri/generated/runtime/v1/RemoveContainerRequest.js';
import type { RemoveContainerResponse__Output } from '../cri/generated/runtime/v1/RemoveContainerResponse.js';
import type { RemoveImageRequest } from '../cri/generated/runtime/v1/RemoveImageRequest.js';
import type { RemoveImageResponse__Output } from '../cri/generated/runtime/v1/RemoveImageResponse.js';
import type { RemovePodSandboxRequest } from '../cri/generated/runtime/v1/RemovePodSandboxRequest.js';
import type { RemovePodSandboxResponse__Output } from '../cri/generated/runtime/v1/RemovePodSandboxResponse.js';
import type { RunPodSandboxRequest } from '../cri/generated/runtime/v1/RunPodSandboxRequest.js';
import type { RunPodSandboxResponse__Output } from '../cri/generated/runtime/v1/RunPodSandboxResponse.js';
import type { StartContainerRequest } from '../cri/generated/runtime/v1/StartContainerRequest.js';
import type { StartContainerResponse__Output } from '../cri/generated/runtime/v1/StartContainerResponse.js';
import type { StatusRequest } from '../cri/generated/runtime/v1/StatusRequest.js';
import type { StatusResponse__Output } from '../cri/generated/runtime/v1/StatusResponse.js';
import type { StopContainerRequest } from '../cri/generated/runtime/v1/StopContainerRequest.js';
import type { StopContainerResponse__Output } from '../cri/generated/runtime/v1/StopContainerResponse.js';
import type { StopPodSandboxRequest } from '../cri/generated/runtime/v1/StopPodSandboxRequest.js';
import type { StopPodSandboxResponse__Output } from '../cri/generated/runtime/v1/StopPodSandboxResponse.js';
import type { VersionRequest } from '../cri/generated/runtime/v1/VersionRequest.js';
import type { VersionResponse__Output } from '../cri/generated/runtime/v1/VersionResponse.js';

export const DEFAULT_ENDPOINT = 'unix:///run/nodelet/cri.sock';

/** Request and response type of each RuntimeService method the CLI calls. */
export interface RuntimeCalls {
  Version: [VersionRequest, VersionResponse__Output];
  Status: [StatusRequest, StatusResponse__Output];
  RunPodSandbox: [RunPodSandboxRequest, RunPodSandboxResponse__Output];
  StopPodSandbox: [StopPodSandboxRequest, StopPodSandboxResponse__Output];
  RemovePodSandbox: [RemovePodSandboxRequest, RemovePodSandboxResponse__Output];
  PodSandboxStatus: [PodSandboxStatusRequest, PodSandboxStatusResponse__Output];
  ListPodSandbox: [ListPodSandboxRequest, ListPodSandboxResponse__Output];
  CreateContainer: [CreateContainerRequest, CreateContainerResponse__Output];
  StartContainer: [StartContainerRequest, StartContainerResponse__Output];
  StopContainer: [StopContainerRequest, StopContainerResponse__Output];
  RemoveContainer: [RemoveContainerRequest, RemoveContainerResponse__Output];
  ListContainers: [ListContainersRequest, ListContainersResponse__Output];
  ContainerStatus: [ContainerStatusRequest, ContainerStatusResponse__Output];
  ExecSync: [ExecSyncRequest, ExecSyncResponse__Output];
}

/** Request and response type of each ImageService method the CLI calls. */
export interface ImageCalls {
  ListImages: [ListImagesRequest, ListImagesResponse__Output];
  ImageStatus: [ImageStatusRequest, ImageStatusResponse__Output];
  PullImage: [PullImageRequest, PullImageResponse__Output];
  RemoveImage: [RemoveImageRequest, RemoveImageResponse__Output];
  ImageFsInfo: [ImageFsInfoRequest, ImageFsInfoResponse__Output];
}

/** The CLI's typed view of the shared client: each method it calls, with its request and reply types. */
export interface CriClient {
  readonly endpoint: string;
  runtime<M extends keyof RuntimeCalls>(method: M, request: RuntimeCalls[M][0], opts?: CriCallOptions): Promise<RuntimeCalls[M][1]>;
  image<M extends keyof ImageCalls>(method: M, request: ImageCalls[M][0], opts?: CriCallOptions): Promise<ImageCalls[M][1]>;
  close(): void;
}

/** The endpoint from the flag, else NODELET_ENDPOINT, else CONTAINER_RUNTIME_ENDPOINT, else the default. */
export function resolveEndpoint(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const raw = flag || env.NODELET_ENDPOINT || env.CONTAINER_RUNTIME_ENDPOINT || DEFAULT_ENDPOINT;
  // A bare path means a unix socket.
  return raw.startsWith('/') ? `unix://${raw}` : raw;
}

export function connectCri(endpoint: string): CriClient {
  return new SharedCriClient(endpoint, { maxReceiveMessageBytes: 64 * 1024 * 1024 });
}

export { isServiceError, GrpcStatus } from '../cri-client/client.js';
