# The QTasks seed (a freelancer's Telegram bot), assembled into one file; only the imports
# changed (qtasks -> conveyor.compat.qtasks, apscheduler's CronTrigger -> ...qtasks.triggers).
# `telegram_api` and `external_api` are the bot's own clients, which the seed leaves out: here
# they write to files in the current directory. Run it with `python main.py`; send a task from
# another terminal with `conveyor send main:app check_orders`.
import json
import pathlib
from dataclasses import dataclass

from conveyor.compat.qtasks.asyncio import QueueTasks
from conveyor.compat.qtasks.registries import AsyncTask
import logging

app = QueueTasks()
app.config.logs_default_level = logging.INFO


@dataclass
class Order:
    user_id: int
    status: str


class TelegramAPI:
    async def send_message(self, chat_id: int, text: str) -> None:
        with open("sent.txt", "a", encoding="utf-8") as f:
            f.write(json.dumps({"chat_id": chat_id, "text": text}, ensure_ascii=False) + "\n")


class ExternalAPI:
    async def get_orders(self) -> list[Order]:
        return [Order(1, "delivered"), Order(2, "shipped"), Order(3, "delivered")]

    async def get_payments(self) -> list[dict]:
        if pathlib.Path("payments-down").exists():
            raise ConnectionError("payments API is down")
        return []


telegram_api = TelegramAPI()
external_api = ExternalAPI()


@app.task(name="send_reminder")
async def send_reminder(chat_id: int, text: str):
    await telegram_api.send_message(chat_id, text)


@app.task(name="check_orders", echo=True)
async def check_orders(self: AsyncTask):
    orders = await external_api.get_orders()
    for order in orders:
        if order.status == "delivered":
            await self.add_task(
                "send_reminder",
                order.user_id,
                "Ваш заказ доставлен!"
            )


@app.task(name="error_logger")
def error_logger(message: str):
    with open("errors.log", "a") as f:
        f.write(message + "\n")


@app.task(name="check_payments", echo=True)
async def check_payments(self: AsyncTask):
    try:
        await external_api.get_payments()
    except Exception as e:
        await self.add_task("error_logger", args=(str(e),))


from conveyor.compat.qtasks.timers import AsyncTimer
from conveyor.compat.qtasks.triggers import CronTrigger

# Предположим, что app уже инициализирован

timer = AsyncTimer(app=app)
timer.add_task("send_reminder", trigger=CronTrigger(minute="*/1"),
args=(123456789, "Не забудьте про заказ!"))

if __name__ == "__main__":
    timer.run_forever()
