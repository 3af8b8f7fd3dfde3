"""The job queue on the database (claim, lease, heartbeat, finish) and the worker that runs it."""
