// The metadata database: the single source of truth for what the store holds.
// SQLite in WAL mode so that concurrent CLI processes read while one writes;
// writers serialise on BEGIN IMMEDIATE and wait (busy timeout) for each other.
import { DatabaseSync, type SQLInputValue, type StatementSync } from 'node:sqlite';
import { chmodSync, existsSync, statSync, writeFileSync } from 'node:fs';
import { errno } from '../util/errors.ts';

// 1: images, layers, objects, containers, leases.
// 2: volumes and container_mounts (made by SCHEMA's CREATE TABLE IF NOT
//    EXISTS when a version-1 store is opened; nothing else changes).
// 3: content_sha256 (made on first use before) and chunk_sha256, the
//    zstd:chunked indexes (chunked/content-index.ts); same migration.
const SCHEMA_VERSION = 3;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- One row per stored image, keyed by its manifest digest.
CREATE TABLE IF NOT EXISTS images (
  id TEXT PRIMARY KEY,              -- manifest digest, sha256:<hex>
  manifest_media_type TEXT NOT NULL,
  config_digest TEXT NOT NULL,
  composefs TEXT NOT NULL,          -- fs-verity digest (hex) of images/<hex>
  source TEXT NOT NULL,             -- where it was imported from
  created INTEGER NOT NULL,         -- unix ms
  entries INTEGER NOT NULL,         -- number of paths in the flattened tree
  logical_size INTEGER NOT NULL     -- bytes of regular-file content (hardlinks once)
);
CREATE TABLE IF NOT EXISTS tags (
  name TEXT PRIMARY KEY,            -- repo:tag
  image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS layers (
  image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  idx INTEGER NOT NULL,
  blob_digest TEXT NOT NULL,        -- compressed blob as the manifest names it
  media_type TEXT NOT NULL,
  blob_size INTEGER NOT NULL,
  diff_id TEXT NOT NULL,            -- sha256 of the uncompressed tar
  tar_size INTEGER NOT NULL,
  split_digest TEXT NOT NULL,       -- blobs/sha256/<hex>: tar-split record
  entries_digest TEXT,              -- blob: the layer's entries as applied (reused by later imports)
  PRIMARY KEY (image_id, idx)
);
-- Every object each image needs (for gc and df); objects hold file contents.
CREATE TABLE IF NOT EXISTS objects (
  digest TEXT PRIMARY KEY,          -- fs-verity hex
  size INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS image_objects (
  image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
  digest TEXT NOT NULL,
  PRIMARY KEY (image_id, digest)
) WITHOUT ROWID;
-- No index on digest: it would double the cost of recording an image
-- (thousands of rows); df and gc scan instead.
-- Manifests already turned into a composefs image: re-importing one of them
-- (even after rmi, until gc) needs no layer read at all.
CREATE TABLE IF NOT EXISTS builds (
  manifest_digest TEXT PRIMARY KEY,
  composefs TEXT NOT NULL,
  entries INTEGER NOT NULL,
  logical_size INTEGER NOT NULL,
  layers_json TEXT NOT NULL,        -- the layer rows, to restore them
  objects_blob TEXT NOT NULL        -- blob: JSON list of the object digests the image needs
);
-- Stacked images (composefs/stack.ts): the layer image composefs is mounted
-- above parent (itself flat or stacked); entries_digest is the blob of the
-- layer's entries, from which the flattened tree is rebuilt; flat is the
-- flattened image's digest once made.
CREATE TABLE IF NOT EXISTS composefs_stack (
  composefs TEXT PRIMARY KEY,
  parent TEXT NOT NULL,
  entries_digest TEXT NOT NULL,
  flat TEXT
);
-- Mounts are runtime state, reconciled with /proc/self/mountinfo.
-- The EROFS loop mount of a composefs image, shared by everything that uses
-- the image; it stays while an image mount or a mounted container needs it.
CREATE TABLE IF NOT EXISTS lower_mounts (
  composefs TEXT PRIMARY KEY,
  path TEXT NOT NULL
);
-- Read-only image mounts (cowshed mount IMAGE), counted.
CREATE TABLE IF NOT EXISTS image_mounts (
  composefs TEXT PRIMARY KEY,
  path TEXT NOT NULL,
  refs INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS containers (
  id TEXT PRIMARY KEY,              -- 64 hex
  name TEXT NOT NULL UNIQUE,
  image_id TEXT NOT NULL,           -- the image it was created from
  composefs TEXT NOT NULL,          -- that image's composefs digest
  created INTEGER NOT NULL,
  mounted INTEGER NOT NULL DEFAULT 0,
  state TEXT NOT NULL DEFAULT 'created',  -- creating | created | running | exited
  exit_code INTEGER,
  creator_pid INTEGER               -- while creating: the process making it
);
-- Named volumes: <store>/volumes/<name>/_data, outside every driver.
CREATE TABLE IF NOT EXISTS volumes (
  name TEXT PRIMARY KEY,
  created INTEGER NOT NULL,         -- unix ms
  anonymous INTEGER NOT NULL DEFAULT 0,   -- made for one container (run -v /dir); run --rm removes it
  needs_copy_up INTEGER NOT NULL DEFAULT 1 -- the first container to mount it copies the image's content in
);
-- What each container mounts (bind, volume, tmpfs), in the order given: run
-- writes the rows in the transaction that makes the container, volume rm
-- refuses a volume any row names, and diff/commit skip the destinations.
CREATE TABLE IF NOT EXISTS container_mounts (
  container_id TEXT NOT NULL REFERENCES containers(id) ON DELETE CASCADE,
  idx INTEGER NOT NULL,
  type TEXT NOT NULL,               -- bind | volume | tmpfs
  source TEXT NOT NULL,             -- host path (bind), volume name, or 'tmpfs'
  destination TEXT NOT NULL,        -- in the container, symlinks resolved inside its root
  options TEXT NOT NULL,            -- JSON array: the OCI mount options
  volume TEXT REFERENCES volumes(name),
  PRIMARY KEY (container_id, idx)
);
CREATE INDEX IF NOT EXISTS container_mounts_volume ON container_mounts(volume);
-- zstd:chunked names file contents and chunks by plain SHA-256; objects are
-- named by fs-verity. Both are indexes (chunked/content-index.ts): rows of
-- objects gc removed are ignored, every byte read through them is verified.
CREATE TABLE IF NOT EXISTS content_sha256 (
  object TEXT PRIMARY KEY,          -- fs-verity hex of an object
  sha256 TEXT NOT NULL,             -- plain sha256 hex of its content
  size INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS content_sha256_by_sha ON content_sha256 (sha256);
-- Chunks of files (TOC entries of type chunk), by content: the bytes
-- [offset, offset + size) of any file whose content is file/file_size.
CREATE TABLE IF NOT EXISTS chunk_sha256 (
  chunk TEXT NOT NULL,              -- sha256 hex of the chunk's bytes
  file TEXT NOT NULL,               -- sha256 hex of the content of a file holding it
  file_size INTEGER NOT NULL,
  offset INTEGER NOT NULL,
  size INTEGER NOT NULL,
  PRIMARY KEY (chunk, file, offset)
) WITHOUT ROWID;
-- Processes working on the store: gc waits for imports and imports for gc.
CREATE TABLE IF NOT EXISTS leases (
  id INTEGER PRIMARY KEY,
  pid INTEGER NOT NULL,
  kind TEXT NOT NULL,               -- 'write' or 'gc'
  started INTEGER NOT NULL
);
`;

export type Row = Record<string, SQLInputValue>;

export class Db {
  readonly sql: DatabaseSync;
  /** Prepared once per query text: imports run thousands of the same inserts. */
  private statements = new Map<string, StatementSync>();

  constructor(file: string) {
    // Owner-only, whatever the umask: SQLite gives the -wal and -shm files
    // the database file's mode.
    try { writeFileSync(file, '', { flag: 'wx', mode: 0o600 }); } catch (e) { if (errno(e) !== 'EEXIST') throw e; }
    if ((statSync(file).mode & 0o077) !== 0) for (const f of [file, `${file}-wal`, `${file}-shm`]) if (existsSync(f)) chmodSync(f, 0o600);
    this.sql = new DatabaseSync(file, { timeout: 30_000 });
    this.sql.exec('PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;');
    // Every command opens the store: skip the schema's write transaction (which
    // also queues behind any writer) when this very schema and migration code
    // were applied already. user_version holds a hash of SCHEMA and of this
    // class's source, so any change to either applies them again (idempotent).
    const stamp = schemaStamp();
    if ((this.sql.prepare('PRAGMA user_version').get() as { user_version: number }).user_version === stamp) return;
    this.tx(() => {
      this.sql.exec(SCHEMA);
      // Stores made before containers had a creating state.
      if (!this.all<{ name: string }>("SELECT name FROM pragma_table_info('containers')").some((c) => c.name === 'creator_pid')) {
        this.sql.exec('ALTER TABLE containers ADD COLUMN creator_pid INTEGER');
      }
      const v = this.get<{ value: string }>('SELECT value FROM meta WHERE key = ?', 'schema');
      if (!v) this.run('INSERT INTO meta (key, value) VALUES (?, ?)', 'schema', String(SCHEMA_VERSION));
      else if (Number(v.value) < SCHEMA_VERSION) this.setMeta('schema', String(SCHEMA_VERSION));
      this.sql.exec(`PRAGMA user_version = ${stamp}`);
    });
  }

  /** Run fn in one write transaction (BEGIN IMMEDIATE: writers queue up, no upgrade deadlocks). */
  tx<T>(fn: () => T): T {
    this.sql.exec('BEGIN IMMEDIATE');
    try {
      const r = fn();
      this.sql.exec('COMMIT');
      return r;
    } catch (e) {
      this.sql.exec('ROLLBACK');
      throw e;
    }
  }

  private prepare(q: string): StatementSync {
    let st = this.statements.get(q);
    if (!st) this.statements.set(q, (st = this.sql.prepare(q)));
    return st;
  }
  run(q: string, ...args: SQLInputValue[]): void {
    this.prepare(q).run(...args);
  }
  get<T>(q: string, ...args: SQLInputValue[]): T | undefined {
    return this.prepare(q).get(...args) as T | undefined;
  }
  all<T>(q: string, ...args: SQLInputValue[]): T[] {
    return this.prepare(q).all(...args) as T[];
  }
  getMeta(key: string): string | undefined {
    return this.get<{ value: string }>('SELECT value FROM meta WHERE key = ?', key)?.value;
  }
  setMeta(key: string, value: string): void {
    this.run('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value', key, value);
  }
  close(): void {
    this.sql.close();
  }
}

let stampCache: number | undefined;
/** FNV-1a of SCHEMA and the Db class source, as a positive 31-bit user_version (never 0, a new database's). */
function schemaStamp(): number {
  if (stampCache === undefined) {
    let h = 0x811c9dc5;
    const text = SCHEMA + Db.toString();
    for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
    stampCache = (h & 0x7fffffff) || 1;
  }
  return stampCache;
}
