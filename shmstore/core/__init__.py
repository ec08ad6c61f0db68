"""The pure core: range sets, the lifecycle table, the control-block layout and the coverage
ring codec. Nothing here imports ``os``, ``mmap``, ``posix_ipc``, ``time`` or the network; it
works on ints, bytes and memoryviews, so every rule can be tested on a ``bytearray``."""
