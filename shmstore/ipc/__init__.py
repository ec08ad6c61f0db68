"""The operating-system edge: one module per facility, each translating its errors into the
shmstore error tree. Nothing above this package calls ``os``, ``mmap``, ``fcntl`` or
``posix_ipc`` directly."""
