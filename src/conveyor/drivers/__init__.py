"""Hand-written drivers: wire-protocol clients that know nothing of conveyor.

An engine is its transport, its store and its client over a driver; most drivers are
libraries (asyncpg, nats-py, aio-pika, pyzmq). Where a library's overhead cost a measured hot
path (bench/NOTES.md), the driver is written here instead, as a library would be: it imports
only the standard library and its parser, never `conveyor`'s own modules (an import contract
holds this), and it is counted apart from the engine that uses it.
"""
