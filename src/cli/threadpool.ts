// Imported first: FUSE handlers block libuv pool threads on disk I/O, so the pool must be larger than its default 4.
process.env.UV_THREADPOOL_SIZE ??= '16';
