"""One module per library with the benchmark's three tasks, importable by its worker.

Each reads `BENCH_REDIS_URL` or `BENCH_SERVER_URL` (the harness's Redis or PostgreSQL, and its
own `BENCH_*` options) from the environment, so the
driver and the worker process it starts build the same application.
"""
