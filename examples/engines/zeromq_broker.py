"""ZeroMQ: fire-and-forget between one sender and its workers, with shared state elsewhere."""

from conveyor import ZeroMQBroker, broker_from_url
from conveyor.engines.redis import RedisResultBackend

# --8<-- [start:zmq]
broker = ZeroMQBroker(
    zmq_pub_host="tcp://0.0.0.0:5555",  # where the sending process binds
    zmq_sub_host="tcp://localhost:5555",  # where workers connect
    result_backend=RedisResultBackend("redis://localhost:6379/0"),
    state_url="redis://localhost:6379/0",  # optional shared state
)
from_url = broker_from_url("zmq://sender-host:5555?state=redis%3A%2F%2Flocalhost%3A6379%2F0")
# --8<-- [end:zmq]

if __name__ == "__main__":
    print(broker, from_url)  # made, not connected: the sender binds at its first send
