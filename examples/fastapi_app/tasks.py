"""The tasks of the integration guide: e-mail, file processing, external data, reports.

The broker is the embedded default (`sqlite:///conveyor.db` in the current directory) unless
`CONVEYOR_BROKER_URL` names another one, e.g. `redis://localhost:6379/1`.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
import os
import smtplib
import time
import urllib.request
import uuid
from datetime import date
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from conveyor import Context, Depends, broker_from_url

log = logging.getLogger(__name__)

broker = broker_from_url()

#: Where outgoing mail (without SMTP), processed files and reports are written.
DATA_DIR = Path(os.environ.get("APP_DATA_DIR", "data"))


@broker.task("email.send", retries=3, retry_delay=5)
def send_email_notification(
    to: str, subject: str, body: str, priority: str = "normal"
) -> dict[str, Any]:
    """Send one e-mail: over SMTP when `SMTP_HOST` is set, else into `data/outbox/` as .eml."""
    message = EmailMessage()
    message["From"] = os.environ.get("MAIL_FROM", "noreply@example.com")
    message["To"] = to
    message["Subject"] = subject
    message["X-Priority"] = {"high": "1", "normal": "3", "low": "5"}.get(priority, "3")
    message.set_content(body)
    message_id = uuid.uuid4().hex
    host = os.environ.get("SMTP_HOST")
    if host:
        with smtplib.SMTP(host, int(os.environ.get("SMTP_PORT", "25")), timeout=30) as smtp:
            smtp.send_message(message)
    else:
        outbox = DATA_DIR / "outbox"
        outbox.mkdir(parents=True, exist_ok=True)
        (outbox / f"{message_id}.eml").write_bytes(bytes(message))
    log.info("mail %s to %s: %s", message_id, to, subject)
    return {
        "status": "sent",
        "to": to,
        "message_id": message_id,
        "via": "smtp" if host else "outbox",
    }


@broker.task("files.process", timeout=300)
async def process_file(
    file_path: str,
    operation: str = "analyze",
    options: dict[str, Any] | None = None,
    context: Context = Depends(),
) -> dict[str, Any]:
    """Analyze a text file (size, lines, words, sha256) or write an upper-cased copy."""
    path = Path(file_path)
    data = await asyncio.to_thread(path.read_bytes)
    await context.set_progress({"stage": "read", "bytes": len(data)})
    text = data.decode("utf-8", errors="replace")
    result: dict[str, Any] = {"file_path": str(path), "operation": operation, "bytes": len(data)}
    if operation == "analyze":
        result.update(
            lines=text.count("\n"),
            words=len(text.split()),
            sha256=hashlib.sha256(data).hexdigest(),
        )
    elif operation == "uppercase":
        out = DATA_DIR / "processed" / f"{path.stem}.upper{path.suffix}"
        await asyncio.to_thread(_write, out, text.upper().encode())
        result["output"] = str(out.resolve())
    else:
        raise ValueError(f"unknown operation {operation!r}: use analyze or uppercase")
    await context.set_progress({"stage": "done", "bytes": len(data)})
    return result


@broker.task("external.fetch", retries=2, retry_delay=1)
def fetch_external_data(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, timeout: float = 30
) -> dict[str, Any]:
    """Fetch a URL; the JSON body is returned parsed, other bodies as text (first 10 000 chars)."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        raw = answer.read()
        kind = answer.headers.get_content_type()
        status = answer.status
    body: Any = json.loads(raw) if kind == "application/json" else raw.decode()[:10_000]
    return {"url": url, "status": status, "content_type": kind, "body": body}


@broker.task("reports.generate", timeout=600)
async def generate_report(
    report_type: str,
    date_from: date,
    date_to: date,
    format: str = "csv",
    email_to: list[str] | None = None,
) -> dict[str, Any]:
    """Build a report file for the period and mail a notice to each recipient (nested tasks)."""
    days = (date_to - date_from).days + 1
    rows = [
        {
            "day": date.fromordinal(date_from.toordinal() + i).isoformat(),
            "type": report_type,
            "value": (date_from.toordinal() + i) % 97,
        }
        for i in range(max(days, 0))
    ]
    out = DATA_DIR / "reports" / f"{report_type}-{date_from}-{date_to}-{int(time.time())}.{format}"
    title = f"{report_type} report, {date_from} to {date_to}"
    await asyncio.to_thread(_write, out, _render(rows, format, title))
    notices = [
        (await send_email_notification.kiq(to, f"{report_type} report", f"Ready: {out}")).task_id
        for to in email_to or []
    ]
    return {"report": str(out.resolve()), "rows": len(rows), "notifications": notices}


def _render(rows: list[dict[str, Any]], format: str, title: str) -> bytes:
    if format == "pdf":
        return _pdf(rows, title)
    if format == "json":
        return json.dumps(rows, indent=2).encode()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["day", "type", "value"])
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def _pdf(rows: list[dict[str, Any]], title: str) -> bytes:
    """A PDF with the title and a table of the rows (fpdf2: `requirements.txt` here)."""
    from fpdf import FPDF  # only the PDF format needs it

    pdf = FPDF()
    pdf.set_title(title)
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=16)
    pdf.cell(text=title, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    pdf.set_font("Helvetica", size=10)
    with pdf.table(col_widths=(40, 30, 20), text_align=("LEFT", "LEFT", "RIGHT")) as table:
        table.row(["day", "type", "value"])
        for row in rows:
            table.row([row["day"], row["type"], str(row["value"])])
    return bytes(pdf.output())


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
