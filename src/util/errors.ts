// Typed errors: a stable code for programs, a one-line message for people.
// The CLI prints `cowshed: <message>` and exits with `exitCode`; anything
// that is not a CowshedError is a bug and keeps its stack trace.

export type ErrorCode =
  | 'EINVAL'        // bad argument or malformed input the user supplied
  | 'ENOENT'        // named thing (image, container, file) does not exist
  | 'EEXIST'        // name already taken
  | 'EFORMAT'       // input is not valid in its format (tar, EROFS, dump, JSON)
  | 'EDIGEST'       // content does not match its digest
  | 'EHOSTILE'      // input tries to escape (.., absolute paths, symlink tricks)
  | 'EUNSUPPORTED'  // valid but not handled (unknown media type, platform)
  | 'ENOSPC'        // not enough space
  | 'EBUSY'         // in use (mounted, referenced by a container)
  | 'ELOCKED'       // another process holds a lock
  | 'ETOOL'         // an external tool (mount, runc) failed
  | 'ECORRUPT'      // the store is damaged (fsck names the problem)
  | 'ETRUST';       // the signature policy refuses the image (no, bad or mismatched signatures)

export class CowshedError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: number;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; exitCode?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CowshedError';
    this.code = code;
    this.exitCode = options?.exitCode ?? (code === 'EINVAL' ? 2 : 1);
  }
}

export function isCowshedError(e: unknown): e is CowshedError {
  return e instanceof CowshedError;
}

/** Shorthand for throwing a typed error from an expression position. */
export function fail(code: ErrorCode, message: string, cause?: unknown): never {
  throw new CowshedError(code, message, { cause });
}

/** Node's system errors carry `code` (ENOENT, ENOSPC, ...). */
export function errno(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e ? String((e as { code: unknown }).code) : undefined;
}
