// cowshed as a library: everything the CLI does, a program can do.
export { Store, type ImageInfo, type ImageDetails, type ImageRecord, type StoreOptions, type DriverName } from './store/store.ts';
export type { ImportOptions, ImportResult, ImportProgress } from './store/import.ts';
export { fsck, type FsckReport, type FsckProblem } from './store/fsck.ts';
export { gc, df, type GcReport, type DfReport } from './store/gc.ts';
export { mountImage, unmountImage, verifyImage } from './drivers/composefs.ts';
export { CowshedError, isCowshedError, type ErrorCode } from './util/errors.ts';
export { FsVerityHasher, fsverityDigest } from './composefs/fsverity.ts';
export { writeComposefsImage } from './composefs/erofs-writer.ts';
export { readComposefsImage } from './composefs/erofs-reader.ts';
export { parseDump, printDump } from './composefs/dump.ts';
export { createComposefs } from './composefs/create.ts';
export type { FsNode } from './tree/node.ts';
export {
  createContainer, removeContainer, getContainer, listContainers, mount as mountContainer, unmount as unmountContainer,
  type ContainerInfo, type CreateOptions,
} from './containers/containers.ts';
export { diffUpper, diffTrees, type Change } from './containers/diff.ts';
export { commitContainer, type CommitOptions } from './containers/commit.ts';
export { runImage, type RunOptions, type RunResult } from './containers/run.ts';
export { exportImage, type ExportOptions } from './store/export.ts';
export { containerPaths, containerLower } from './drivers/composefs.ts';
// Signatures and the trust policy: pass admitPull as PullOptions.admit to enforce the policy on a pull.
export { admitPull, signManifest, signPushed, prepareSigning, storedSignatures, type TrustOptions, type SignOptions } from './trust/trust.ts';
export { verifyChain, type ChainReport } from './trust/chain.ts';
export { loadPolicy, parsePolicy, type Policy } from './trust/policy.ts';
export { loadRegistriesD } from './trust/registries-d.ts';
export { generateSigstoreKey, decryptPrivateKey, readPublicKeys } from './trust/keys.ts';
export { createVolume, listVolumes, inspectVolume, removeVolume, pruneVolumes, type VolumeInfo } from './volumes/volumes.ts';
export { parseVolumeFlag, parseMountFlag, parseTmpfsFlag, type MountRequest } from './volumes/mounts.ts';
