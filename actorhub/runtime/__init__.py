"""The per-process runtime shared by drivers and workers: object refs, the table of objects a
process holds, reference counting with borrowers, serialization and ids."""
