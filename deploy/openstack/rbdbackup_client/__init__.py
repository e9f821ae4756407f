"""rbdbackup_client: a thin, typed Python client of rbdbackup's BackupService.

The messages and stubs are generated from proto/ at build time (`npm run build:python` writes them to
dist/python/rbdbackup/v1 beside this package). See client.py for deadlines, retries and leader
following, config.py for the settings.
"""

from rbdbackup.v1 import agent_pb2, backup_service_pb2, common_pb2

from .client import FINAL_STATES, Client
from .config import ClientConfig
from .errors import JobFailed, RbdbackupError, Stopped, status_of

__all__ = [
    "Client",
    "ClientConfig",
    "FINAL_STATES",
    "JobFailed",
    "RbdbackupError",
    "Stopped",
    "agent_pb2",
    "backup_service_pb2",
    "common_pb2",
    "status_of",
]
