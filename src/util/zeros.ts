// One shared buffer of zeros for the holes of sparse files: the tar reader
// hands out slices of it, and the fs-verity hasher and the object writer
// recognise them (same ArrayBuffer) so a mostly empty file costs neither a
// hash per block nor disk blocks for its holes.
export const ZERO_CHUNK = Buffer.alloc(1 << 20);

/** A slice of ZERO_CHUNK (all zeros, known without looking). */
export const isZeroChunk = (c: Uint8Array): boolean => c.buffer === ZERO_CHUNK.buffer;
