"""rbdbackup_cinder: an OpenStack Cinder backup driver backed by rbdbackup.

cinder.conf: backup_driver = rbdbackup_cinder.driver.RbdbackupBackupDriver (options in options.py;
README.md, "OpenStack Cinder"). Importing this package imports Cinder.
"""

from .driver import RbdbackupBackupDriver

__all__ = ["RbdbackupBackupDriver"]
