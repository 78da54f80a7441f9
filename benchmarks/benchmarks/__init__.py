"""asv benchmarks for fastnn (see ../README.md); shared inputs live in ``common``."""
