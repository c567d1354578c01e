"""I/O edge to the database: schema, event log, read models, engine set-up (sync SQLAlchemy Core)."""
