// The CRC-32 (zlib's) that seals wire frames, capture-log frames, the redo log and the applied record.
import { crc32 as zlibCrc32 } from 'node:zlib';
import { tryNativeAddon } from '../fs/native.js';

/**
 * ISA-L's through drms's addon (carry-less multiplies: 20 µs a MiB here, zlib's 280), zlib's where the addon is not
 * built. The same function either way: frames checked by one were sealed by the other.
 */
export const crc32: (data: Uint8Array, value?: number) => number = tryNativeAddon()?.crc32 ?? zlibCrc32;
