"""The worker: the consumer loop, the run pipeline, executors, leases and the supervisor."""
