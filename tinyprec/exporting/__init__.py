"""Stage 3: export orchestration (lower, writers, firmware bundle, manifest)."""
