"""The app's broker on a temporary SQLite file: set before the tests import `app`."""

import os
import tempfile

os.environ["CONVEYOR_BROKER_URL"] = f"sqlite:///{tempfile.mkdtemp()}/tests.db"
