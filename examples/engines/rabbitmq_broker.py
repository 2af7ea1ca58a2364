"""RabbitMQ moves the messages; the shared state lives in another engine's store."""

from conveyor import AmqpBroker, broker_from_url

# --8<-- [start:amqp]
broker = AmqpBroker("amqp://user:pw@rabbit:5672/prod", state_url="redis://redis:6379/0")
from_url = broker_from_url("amqp://user:pw@rabbit:5672/prod?state=sqlite%3A%2F%2F%2Fstate.db")
# --8<-- [end:amqp]

if __name__ == "__main__":
    print(broker, from_url)  # made, not connected: they connect when they start
    assert "pw" not in repr(broker)
