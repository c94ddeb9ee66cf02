// run: create a container, write its OCI runtime bundle next to it, run it
// with runc, record how it ended, and remove it afterwards with --rm.
import { join } from 'node:path';
import type { Store } from '../store/store.ts';
import { createContainer, removeContainer } from './containers.ts';
import { containerPaths, verifyImage } from '../drivers/composefs.ts';
import { runtimeSpec, writeBundle } from './bundle.ts';
import { runContainer, runtimeId, type RuntimeName, type RunContainerResult } from './runtime.ts';

export interface RunOptions {
  name?: string;
  /** Replaces the image's Cmd (the Entrypoint stays first), as podman run does. */
  args?: string[];
  env?: string[];
  rm?: boolean;
  tty?: boolean;
  /** Re-hash the image and its objects before running (no kernel fs-verity here). */
  verify?: boolean;
  runtime?: RuntimeName;
  stdio?: 'inherit' | 'pipe';
  signal?: AbortSignal;
}

export interface RunResult { id: string; name: string; exitCode: number; stdout?: Buffer; stderr?: Buffer }

export async function runImage(store: Store, imageRef: string, opts: RunOptions = {}): Promise<RunResult> {
  const image = store.inspectImage(imageRef);
  if (opts.verify) await verifyImage(store, image.id, image.composefs);
  const c = await createContainer(store, imageRef, { name: opts.name });
  let result: RunContainerResult | undefined;
  try {
    const spec = runtimeSpec({
      config: image.config, rootfs: c.rootfs, args: opts.args, env: opts.env, tty: opts.tty, hostname: c.id.slice(0, 12),
    });
    const bundle = join(containerPaths(store, c.id).dir, 'bundle');
    await writeBundle(bundle, spec);
    store.db.tx(() => store.db.run("UPDATE containers SET state = 'running' WHERE id = ?", c.id));
    try {
      result = await runContainer({ bundle, id: runtimeId(c.id), runtime: opts.runtime, stdio: opts.stdio, signal: opts.signal });
    } finally {
      store.db.tx(() => store.db.run("UPDATE containers SET state = 'exited', exit_code = ? WHERE id = ?", result?.exitCode ?? null, c.id));
    }
  } finally {
    if (opts.rm) removeContainer(store, c.id, { force: true });
  }
  return { id: c.id, name: c.name, exitCode: result!.exitCode, stdout: result!.stdout, stderr: result!.stderr };
}
