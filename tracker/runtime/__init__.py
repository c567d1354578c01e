"""Long-running work under one trio nursery: ingest, projector, backfill, reconcile."""
