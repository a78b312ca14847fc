"""Errors raised by ``storage``; foreign driver errors are translated once, at the backend edge.

Hierarchy::

    LiveChatError               root of ALL project errors (here, in the lowest layer, so every
    │                           package can subclass it; ``engine`` re-exports it)
    └── StorageError            root of every storage failure
        ├── NotFound            no such row in this workspace (a foreign id looks exactly missing)
        ├── Conflict            a unique rule was violated (username taken, duplicate key)
        ├── StorageUnavailable  the database cannot be reached or did not answer in time
        │                       (outage, restart, lock held past busy_timeout, storage closed)
        ├── CommitFailed        a group commit failed: on an outage every caller of the batch
        │                       gets it; a submission the database refuses gets it alone (its
        │                       batch-mates are committed without it). Nothing failed was
        │                       acknowledged; retry with the same ``client_msg_id`` (idempotent).
        │                       Its message is a fixed sentence (the driver's text is logged)
        │   └── AppendRefused   the database refused this submission's own data (not an
        │                       outage, e.g. text it cannot store); its batch-mates commit
        ├── LeaseLost           an append's fence is stale: its lease was taken over by another
        │                       node (a higher epoch); nothing of that submission was stored
        ├── QuotaExceeded       the workspace's file storage is full (nothing stored)
        ├── MigrationError      the schema could not be brought to this program's version
        ├── BackupError         ``livechat backup`` could not produce a consistent copy
        ├── RestoreError        a restore/import was refused (target not empty, bad file) or
        │                       did not verify
        │   └── NotABackupError the file is not a usable backup: empty, random bytes,
        │                       truncated or damaged (``livechat restore`` exits 2)
        ├── InvalidDatabaseURL  the URL names no supported backend or is malformed
        ├── AuditChainBroken    ``livechat audit verify`` found a broken link in an audit chain
        └── EncryptionError     a master key is missing or malformed, or a wrapped data key or
                                sealed value does not open (wrong key, or tampered bytes)
"""

from __future__ import annotations


class LiveChatError(Exception):
    """Root of every error raised by the project, so callers can catch "ours" in one place."""


class StorageError(LiveChatError):
    """Root of the storage errors: catch this to handle "the database said no"."""


class NotFound(StorageError):
    """The row does not exist in the given workspace (another workspace's row included)."""


class Conflict(StorageError):
    """A uniqueness rule was violated, e.g. the username is already taken."""


class StorageUnavailable(StorageError):
    """The database is unreachable or timed out; the operation may be retried later."""


class CommitFailed(StorageError):
    """The commit holding this append failed; this append was not stored."""


class AppendRefused(CommitFailed):
    """The database refused this append's data; the rest of its batch was committed."""


class LeaseLost(StorageError):
    """This node no longer owns the lease the append was fenced with; nothing was stored."""


class QuotaExceeded(StorageError):
    """The workspace's file storage is full (``max_storage_bytes``); nothing was stored."""


class MigrationError(StorageError):
    """A schema migration failed, or the database is newer than this program."""


class BackupError(StorageError):
    """An online backup could not be made."""


class RestoreError(StorageError):
    """A restore or import was refused or failed verification."""


class NotABackupError(RestoreError):
    """The file given to restore is not a usable backup (empty, foreign, truncated, damaged)."""


class InvalidDatabaseURL(StorageError):
    """The database URL is malformed or names an unsupported backend."""


class AuditChainBroken(StorageError):
    """An audit hash chain does not verify: an entry was edited, deleted or reordered."""


class EncryptionError(StorageError):
    """A master key is missing or malformed, or a wrapped key or sealed value does not open."""
