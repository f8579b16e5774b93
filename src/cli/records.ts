// `drms records FILE`: lists a record file's records for operators, on either site; a damaged file is reported
// with the record number and offset where it stops parsing.
import fs from 'node:fs';
import { ConfigError } from '../errors.js';
import { parseRecords, RecordDamageError, type RecordFormat } from '../vos/layout.js';
import { readFormat } from '../vos/record-file.js';

export interface RecordListing {
  path: string;
  organization: RecordFormat['organization'];
  recordSize: number;
  records: Array<{ recno: number; offset: number; length: number; state: string; data: string; text?: string }>;
  damage?: { recno: number; offset: number; message: string };
}

export async function listRecords(file: string): Promise<RecordListing> {
  const fmt = await readFormat(file).catch((err: Error) => {
    throw new ConfigError(`${file}: ${err.message}`);
  });
  if (!fmt) throw new ConfigError(`${file} is not a record file (no user.vos.organization attribute)`);
  const listing: RecordListing = { path: file, organization: fmt.organization, recordSize: fmt.recordSize, records: [] };
  try {
    for (const r of parseRecords(fmt, await fs.promises.readFile(file))) {
      const printable = /^[\x20-\x7e\t]*$/.test(r.data.toString('latin1'));
      listing.records.push({ recno: r.recno, offset: r.offset, length: r.data.length, state: r.state, data: r.data.toString('base64'), ...(printable && { text: r.data.toString('latin1') }) });
    }
  } catch (err) {
    if (!(err instanceof RecordDamageError)) throw err;
    listing.damage = { recno: err.recno, offset: err.offset, message: err.message };
  }
  return listing;
}

export function formatListing(l: RecordListing): string {
  const lines = [`${l.path}: ${l.organization}${l.recordSize ? `, record size ${l.recordSize}` : ''}, ${l.records.length} records`];
  for (const r of l.records) {
    const shown = r.text !== undefined ? JSON.stringify(r.text.length > 60 ? r.text.slice(0, 60) + '…' : r.text) : `base64:${r.data.slice(0, 60)}`;
    lines.push(`${String(r.recno).padStart(8)}  @${String(r.offset).padEnd(10)} ${String(r.length).padStart(5)} B  ${r.state.padEnd(7)}  ${r.state === 'present' ? shown : ''}`.trimEnd());
  }
  if (l.damage) lines.push(`DAMAGED: ${l.damage.message}`);
  return lines.join('\n');
}
