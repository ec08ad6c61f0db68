"""Bounded soak: many processes doing random operations on several resources, with
``psutil`` checks that descriptors, mappings, ``/dev/shm`` entries and memory stay flat."""
