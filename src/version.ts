// The version nodelet reports (CRI Version, --version); kept beside package.json's.
export const NODELET_VERSION = '0.1.0';
export const CRI_API_VERSION = 'v1';
