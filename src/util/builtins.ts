// Node built-ins that most commands never use, loaded on first use
// (process.getBuiltinModule) rather than by a top-level import: a module on
// the path of every command that imports node:crypto loads it (some twenty
// internal modules) for `ps` too, and start-up is most of what a short
// command costs. Modules whose every caller needs the built-in import it as
// usual.
export const crypto = (): typeof import('node:crypto') => process.getBuiltinModule('node:crypto');
export const fsPromises = (): typeof import('node:fs/promises') => process.getBuiltinModule('node:fs/promises');
export const os = (): typeof import('node:os') => process.getBuiltinModule('node:os');
