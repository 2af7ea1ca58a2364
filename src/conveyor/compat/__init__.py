"""Coming from Taskiq or QTasks: their public names as thin adapters onto conveyor's API.

Point the imports at `conveyor.compat.<the same name>` and the code runs on conveyor:

    from conveyor.compat.taskiq import InMemoryBroker      # was: from taskiq import ...
    from conveyor.compat.taskiq_redis import RedisStreamBroker        # was: from taskiq_redis ...
    from conveyor.compat.qtasks.asyncio import QueueTasks     # was: from qtasks.asyncio ...

Where conveyor has the name (`Depends`, `Scheduler`, `TaskResult`, the retry middlewares), the
compat name is the same object or a subclass that only translates; behaviour that differs on
purpose is listed in docs/migrating-from-taskiq.md. Nothing in conveyor imports this package.
"""
