// The part of fuse-native's untyped API that drms uses (2.2.6, patched: times in microseconds).
declare module 'fuse-native' {
  type Cb = (code: number, ...values: unknown[]) => void;
  interface FuseOptions {
    allowOther?: boolean;
    defaultPermissions?: boolean;
    fsname?: string;
    subtype?: string;
    timeout?: number | false;
    force?: boolean;
    mkdir?: boolean;
    debug?: boolean;
  }
  class Fuse {
    constructor(mnt: string, ops: Record<string, (...args: never[]) => void>, opts?: FuseOptions);
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
  }
  export = Fuse;
}
