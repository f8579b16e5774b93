// The mirror workload: every mutating operation drms captures, run by bash in a child process; a ledger appended
// with fdatasync per record.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

export const FULL_WORKLOAD = `
mkdir -p logs data/deep/deeper scratch
# appends, with a record count we can check later
for i in $(seq 1 200); do echo "txn $i $(date +%s%N)" >> logs/atm.log; done
# a file larger than one FUSE write, then random overwrites inside it
head -c 3000000 /dev/urandom > data/blob.bin
for off in 17 4096 131071 999999 2999990; do printf 'OVERWRITE' | dd of=data/blob.bin bs=1 seek=$off conv=notrunc status=none; done
# sparse write past EOF
printf 'tail' | dd of=data/sparse.bin bs=1 seek=5000000 conv=notrunc status=none
# truncate up and down
head -c 10000 /dev/urandom > data/trunc.bin
truncate -s 50000 data/trunc.bin
truncate -s 1234 data/trunc.bin
# rename over an existing file, and a directory rename across directories
echo old > data/target.cfg
echo new > data/incoming.cfg
mv data/incoming.cfg data/target.cfg
mkdir -p staging/batch1 && echo inner > staging/batch1/file.txt
mv staging/batch1 data/deep/batch1
# hard links and symlinks
echo shared > data/shared.txt
ln data/shared.txt data/deep/shared-link.txt
ln -s ../shared.txt data/deep/sym.txt
ln -s /etc/hostname data/abs-sym
# metadata
chmod 640 data/shared.txt
chmod 711 data/deep
chown 1234:5678 data/blob.bin
chown -h 4321:8765 data/deep/sym.txt
touch -m -d "2001-02-03 04:05:06.789" logs/atm.log
touch -d "2010-01-01 00:00:00" data/trunc.bin
# xattrs set, replaced and removed
setfattr -n user.vos.organization -v stream logs/atm.log
setfattr -n user.temp -v x data/blob.bin
setfattr -n user.temp -v y data/blob.bin
setfattr -n user.gone -v z data/blob.bin
setfattr -x user.gone data/blob.bin
setfattr -n user.dir -v d data/deep
# unlink and rmdir
echo bye > scratch/tmp1 && rm scratch/tmp1
rmdir scratch
rmdir staging
rm -f pre/remove-me.txt
`;

/**
 * Appends `n` 64-byte records (numbered from `from`) to `file` from a child process, each followed by fdatasync; then
 * runs `then`.
 */
export async function appendSynced(file: string, n: number, then = '', from = 0): Promise<void> {
  const script = `
    const fs = require('node:fs');
    const fd = fs.openSync(${JSON.stringify(file)}, 'a');
    for (let i = ${from}; i < ${from + n}; i++) {
      fs.writeSync(fd, ('record ' + i).padEnd(63) + '\\n');
      fs.fdatasyncSync(fd);
    }
    ${then}`;
  await promisify(execFile)(process.execPath, ['-e', script]);
}
