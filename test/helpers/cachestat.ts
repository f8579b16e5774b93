// A file's page cache as cachestat(2) (Linux 6.5+) counts it, through python's ctypes: Node has no binding for it.
import { execFileSync } from 'node:child_process';

/** Pages of the file: cached (dirty and under writeback among them), and evicted by the kernel's reclaim (a shadow entry left). */
export interface CacheStat {
  cache: number;
  dirty: number;
  writeback: number;
  /** Reclaim leaves a shadow entry for a page it evicts; POSIX_FADV_DONTNEED and truncation do not. */
  evicted: number;
  recentlyEvicted: number;
}

const SCRIPT = `
import ctypes, os, sys
class Range(ctypes.Structure): _fields_ = [('off', ctypes.c_uint64), ('len', ctypes.c_uint64)]
class Stat(ctypes.Structure): _fields_ = [(n, ctypes.c_uint64) for n in ('cache', 'dirty', 'writeback', 'evicted', 'recently_evicted')]
fd = os.open(sys.argv[1], os.O_RDONLY)
r, s = Range(0, 0), Stat()
if ctypes.CDLL(None, use_errno=True).syscall(451, fd, ctypes.byref(r), ctypes.byref(s), 0) != 0: sys.exit('cachestat failed')
print(s.cache, s.dirty, s.writeback, s.evicted, s.recently_evicted)
`;

export function cachestat(file: string): CacheStat {
  const [cache, dirty, writeback, evicted, recentlyEvicted] = execFileSync('python3', ['-c', SCRIPT, file], { encoding: 'utf8' }).trim().split(' ').map(Number);
  return { cache: cache!, dirty: dirty!, writeback: writeback!, evicted: evicted!, recentlyEvicted: recentlyEvicted! };
}
