{
  "targets": [
    {
      "target_name": "drms_fuse",
      "sources": ["drms_fuse.c", "capture.c", "flush.c", "pages.c", "uring.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "<!@(pkg-config --cflags fuse3)"],
      "libraries": ["<!@(pkg-config --libs fuse3)", "-lisal", "-lpthread"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"]
    }
  ]
}
