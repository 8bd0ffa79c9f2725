"""The schema and its migrations, the database connection, and the audit log."""
