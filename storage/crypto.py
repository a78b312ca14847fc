"""Encryption at rest: per-workspace data keys (AES-256-GCM) wrapped by a master key.

Layout::

    master key (32 bytes; setting, environment or file; never in the database)
      └── wraps one data key per workspace (table ``data_keys``: wrapped key, master key id)
            └── encrypts column values: visitors' name, email, attributes and IP, and the
                values other features seal with ``Storage.seal`` (IdP and TOTP secrets)

A sealed value is text: ``lc1:`` + base64url(12-byte nonce + ciphertext + 16-byte tag). The
associated data binds it to its workspace and column (``<workspace>|<table>.<column>``), so a
value copied to another row's column or another workspace does not decrypt. Values without the
prefix are plaintext written before encryption was on; they read as they are until
``livechat keys migrate`` seals them.

The master key ring holds the current key first and, during a rotation, older ones: a data key
wrapped by any of them opens; new data keys are wrapped by the first. ``livechat keys rotate``
re-wraps every data key under a new master key in one transaction; data keys themselves (and
so the data) never change, which is why rotation needs no downtime.

KMS seam: ``MasterKeyRing`` is the only object that touches the master key (``wrap`` and
``unwrap`` of 32-byte data keys). A KMS-backed ring implements the same two methods (and
``current_id``) by calling the KMS; nothing else changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage._files import create_private_file
from storage.api import SNIPPET_MATCH_END, SNIPPET_MATCH_START
from storage.errors import EncryptionError
from storage.urls import backend_of

__all__ = ["EncryptionError"]  # re-exported: callers of this module catch it

PREFIX: Final = "lc1:"
# A value sealed with a visitor's own key (``storage._vault``): ``lc2:<visitor id>:`` + the
# same base64url; the reader learns from the value which key opens it.
VISITOR_PREFIX: Final = "lc2:"
# What a value reads as once its visitor key is destroyed (erasure): text, then attributes.
ERASED_TEXT: Final = "[erased]"
ERASED_JSON: Final = "{}"
_ERASED_AS_JSON: Final = frozenset({"visitors.attributes"})
VISITOR_KEY_CACHE: Final = 10_000  # visitor keys kept per workspace key (one AESGCM each)
_VISITOR_REF: Final = re.compile(r'lc2:([^:"]+):')
NONCE_BYTES: Final = 12
KEY_BYTES: Final = 32
KEY_FILE_SUFFIX: Final = ".master-key"

# Columns sealed with the workspace's data key, per table (values as stored: JSON text for
# ``attributes``).
SEALED_COLUMNS: Final[Mapping[str, tuple[str, ...]]] = {
    "visitors": ("name", "email", "attributes", "ip"),
    "events": ("body",),
    # The visitor's comment with their rating (sealed with their key, storage._vault).
    "conversations": ("rating_comment",),
    "agent_two_factor": ("totp_secret",),
    "workspace_sso": ("client_secret",),
    "webhook_subscriptions": ("secret", "previous_secret"),
    "webhook_deliveries": ("payload",),
    # Mail of a workspace; server-wide mail (no workspace) has no data key and stays as is.
    "mail_outbox": ("recipient", "subject", "text_body", "html_body"),
    # The file's name; its bytes are sealed in the blob store (``seal_bytes``).
    "attachments": ("name",),
}
# The column naming one row of each sealed table (besides events), for ``keys migrate``.
ROW_ID_COLUMNS: Final[Mapping[str, str]] = {
    "visitors": "id",
    "conversations": "id",
    "agent_two_factor": "agent_id",
    "workspace_sso": "workspace_id",
    "webhook_subscriptions": "id",
    "webhook_deliveries": "id",
    "mail_outbox": "id",
    "attachments": "id",
}
# Fields of an event's ``data`` that hold personal data, by event kind: sealed one by one
# inside the JSON (the rest of ``data`` stays readable to the queries that use it).
SEALED_DATA_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "offline_message": ("name", "email"),
}
# Sealed file bytes start with this (a NUL first: no sniffed file type does); bytes without it
# were stored before encryption and are served as they are.
BLOB_PREFIX: Final = b"\x00lcb1\x00"
# File bytes sealed with a visitor's key: this, the visitor id, a NUL, then nonce + ct + tag.
VISITOR_BLOB_PREFIX: Final = b"\x00lcb2\x00"
SEARCHABLE_KINDS: Final = frozenset({"message", "offline_message", "note"})
MAX_QUERY_WORDS: Final = 16
_TOKEN_BYTES: Final = 12  # 96-bit keyed tokens: collisions between words are negligible
_TOKEN_CACHE_WORDS: Final = 50_000  # per workspace key: a chat vocabulary fits
_WORD: Final = re.compile(r"\w+")


def search_words(text: str) -> list[str]:
    """Whole words as search compares them: lower case, accents removed (``Café`` = ``cafe``),
    split on anything that is not a letter, digit or underscore."""
    lowered = text.lower()
    if lowered.isascii():  # the common case: nothing to fold
        return _WORD.findall(lowered)
    folded = unicodedata.normalize("NFKD", lowered)
    return _WORD.findall("".join(c for c in folded if not unicodedata.combining(c)))


def make_snippet(body: str, words: set[str], *, around: int = 12) -> str:
    """The hit's text around its first matching word, matching words between the markers
    ``SNIPPET_MATCH_START``/``SNIPPET_MATCH_END`` (the web layer makes ``snippet_parts`` of
    them), at most ``2 * around`` words, with ``…`` where text was left out (made from the
    decrypted body)."""
    parts = re.split(r"(\w+)", body)  # words at the odd indexes
    positions = list(range(1, len(parts), 2))
    if not positions:
        return body
    matched = {i for i in positions if any(w in words for w in search_words(parts[i]))}
    first = min(matched) if matched else positions[0]
    at = positions.index(first)
    lo, hi = max(0, at - around), min(len(positions), at + around)
    start = 0 if lo == 0 else positions[lo]
    end = len(parts) if hi == len(positions) else positions[hi - 1] + 1
    text = "".join(
        f"{SNIPPET_MATCH_START}{parts[i]}{SNIPPET_MATCH_END}" if i in matched else parts[i]
        for i in range(start, end)
    )
    return ("…" if lo > 0 else "") + text.strip() + ("…" if hi < len(positions) else "")


def plain_terms(text: str) -> str:
    """The search column of an unencrypted event: its distinct words (no key, no secrecy)."""
    return " ".join(sorted(set(search_words(text))))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parse_master_keys(text: str) -> list[bytes]:
    """Master keys from text: base64 (url-safe or standard) keys of 32 bytes, separated by
    newlines, commas or spaces; the first is current. ``EncryptionError`` when malformed."""
    keys = []
    for part in text.replace(",", " ").split():
        try:
            raw = base64.b64decode(
                part.replace("-", "+").replace("_", "/") + "=" * (-len(part) % 4)
            )
        except ValueError as err:
            raise EncryptionError("a master key is not base64") from err
        if len(raw) != KEY_BYTES:
            raise EncryptionError(f"a master key must be {KEY_BYTES} bytes (base64 of them)")
        keys.append(raw)
    if not keys:
        raise EncryptionError("no master key given")
    return keys


def new_master_key_text() -> str:
    return _b64(secrets.token_bytes(KEY_BYTES))


def key_id(master_key: bytes) -> str:
    """A public name of a master key (stored next to the keys it wrapped); not the key."""
    return hmac.new(master_key, b"livechat master key id", hashlib.sha256).hexdigest()[:16]


class MasterKeyRing:
    """Wraps and unwraps data keys; the current master key first, older ones after."""

    def __init__(self, keys: Sequence[bytes], *, source: str = "") -> None:
        if not keys:
            raise EncryptionError("no master key given")
        self._keys = {key_id(k): AESGCM(k) for k in keys}
        self._current = key_id(keys[0])
        self.source = source  # where the keys came from, for messages (never the key)

    @property
    def current_id(self) -> str:
        return self._current

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._keys)

    def wrap(self, data_key: bytes, context: str) -> tuple[str, str]:
        """(wrapped key text, id of the master key that wrapped it)."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._keys[self._current].encrypt(nonce, data_key, b"dk|" + context.encode())
        return _b64(nonce + sealed), self._current

    def unwrap(self, wrapped: str, master_id: str, context: str) -> bytes:
        aead = self._keys.get(master_id)
        if aead is None:
            raise EncryptionError(
                f"data key of {context!r} is wrapped by master key {master_id}, which is not"
                " configured (give it as an older key, or restore the right key file)"
            )
        raw = _unb64(wrapped)
        try:
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], b"dk|" + context.encode())
        except InvalidTag as err:
            raise EncryptionError(f"data key of {context!r} does not open") from err


class VisitorKeyNotLoaded(LookupError):
    """A read opened an ``lc2:`` value before loading its visitor key (``storage._vault``):
    a bug in the read path, never a state of the data."""


class ErasedFile(LookupError):
    """A file's bytes are sealed with a visitor key the vault no longer holds (erased): the
    caller treats the bytes as gone."""


class DataKey:
    """One workspace's data key: seals and opens column values, and makes the keyed search
    tokens of the workspace's blind index.

    It also resolves visitor keys: ``_visitors`` holds the keys loaded from the vault (None:
    the vault has none, the visitor was erased), so ``open`` reads ``lc2:`` values without I/O.
    """

    __slots__ = ("_aead", "_search_mac", "_tokens", "_visitors", "vault", "workspace_id")

    def __init__(self, workspace_id: str, key: bytes, *, vault: str | None = None) -> None:
        self.workspace_id = workspace_id
        self.vault = vault  # the table holding this workspace's visitor keys
        self._aead = AESGCM(key)
        self._visitors: dict[str, AESGCM | None] = {}
        # A separate key for the blind index, derived from the data key: destroying the data
        # key destroys the ability to make (or test guesses against) the tokens too.
        search_key = hmac.new(key, b"livechat blind index v1", hashlib.sha256).digest()
        self._search_mac = hmac.new(search_key, digestmod=hashlib.sha256)
        # Tokens of recent words: the hot path computes each word's HMAC once, not per message.
        self._tokens: dict[str, str] = {}

    def token(self, word: str) -> str:
        """The blind-index token of one normalised word: "t" + HMAC-SHA-256 (96 bits) in hex."""
        token = self._tokens.get(word)
        if token is None:
            mac = self._search_mac.copy()
            mac.update(word.encode())
            # A letter first: PostgreSQL's parser would split "3e4a..." at a float ("3e4").
            token = "t" + mac.digest()[:_TOKEN_BYTES].hex()
            if len(self._tokens) >= _TOKEN_CACHE_WORDS:
                self._tokens.clear()
            self._tokens[word] = token
        return token

    def terms(self, text: str) -> str:
        """The search column of an encrypted event: the distinct tokens of its words, sorted
        (so neither word order nor repetitions are kept)."""
        cached = self._tokens.get  # inline: a method call per (mostly cached) word is the cost
        return " ".join(sorted({cached(w) or self.token(w) for w in search_words(text)}))

    def seal(self, value: str, column: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        aad = f"{self.workspace_id}|{column}".encode()
        return PREFIX + _b64(nonce + self._aead.encrypt(nonce, value.encode(), aad))

    def open(self, value: str, column: str) -> str:
        if value.startswith(VISITOR_PREFIX):
            return self._open_visitor_value(value, column)
        if not value.startswith(PREFIX):
            return value  # plaintext from before encryption (``livechat keys migrate``)
        raw = _unb64(value[len(PREFIX) :])
        aad = f"{self.workspace_id}|{column}".encode()
        try:
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad).decode()
        except InvalidTag as err:
            raise EncryptionError(f"a sealed value of {column} does not open") from err

    def seal_bytes(self, data: bytes, context: str) -> bytes:
        """File bytes for the blob store: ``BLOB_PREFIX`` + nonce + ciphertext + tag, bound to
        the workspace and ``context`` (the file's id), so a blob moved under another id does
        not open."""
        nonce = os.urandom(NONCE_BYTES)
        aad = f"{self.workspace_id}|blob|{context}".encode()
        return BLOB_PREFIX + nonce + self._aead.encrypt(nonce, data, aad)

    def open_bytes(self, data: bytes, context: str) -> bytes:
        if data.startswith(VISITOR_BLOB_PREFIX):
            return self._open_visitor_bytes(data, context)
        if not data.startswith(BLOB_PREFIX):
            return data  # stored before encryption (``livechat keys migrate`` seals it)
        raw = memoryview(data)[len(BLOB_PREFIX) :]
        aad = f"{self.workspace_id}|blob|{context}".encode()
        try:
            return self._aead.decrypt(bytes(raw[:NONCE_BYTES]), bytes(raw[NONCE_BYTES:]), aad)
        except InvalidTag as err:
            raise EncryptionError(f"the bytes of file {context!r} do not open") from err

    def seal_data(self, kind: str, data: Mapping[str, Any]) -> Mapping[str, Any]:
        """An event's ``data`` with its personal fields (``SEALED_DATA_FIELDS``) sealed."""
        fields = SEALED_DATA_FIELDS.get(kind)
        if not fields or not any(isinstance(data.get(f), str) for f in fields):
            return data
        out = dict(data)
        for field in fields:
            value = out.get(field)
            if isinstance(value, str) and not is_sealed(value):
                out[field] = self.seal(value, f"events.data.{field}")
        return out

    def _open_data(self, kind: object, data: object) -> object:
        fields = SEALED_DATA_FIELDS.get(str(kind))
        if (
            not fields
            or not isinstance(data, str)
            or (PREFIX not in data and VISITOR_PREFIX not in data)
        ):
            return data
        parsed = json.loads(data)
        for field in fields:
            value = parsed.get(field)
            if isinstance(value, str):
                parsed[field] = self.open(value, f"events.data.{field}")
        return json.dumps(parsed, ensure_ascii=False, separators=(",", ":"))

    def seal_row(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        for column in SEALED_COLUMNS.get(table, ()):
            value = row.get(column)
            if isinstance(value, str):
                row[column] = self.seal(value, f"{table}.{column}")
        return row

    def open_row(self, table: str, row: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(row)
        for column in SEALED_COLUMNS.get(table, ()):
            value = out.get(column)
            if isinstance(value, str):
                out[column] = self.open(value, f"{table}.{column}")
        if table == "events" and "data" in out:
            out["data"] = self._open_data(out.get("kind"), out["data"])
        return out

    # ------------------------------------------------------------ visitor keys

    def _visitor_context(self, visitor_id: str) -> bytes:
        return f"vk|{self.workspace_id}|{visitor_id}".encode()

    def wrap_visitor_key(self, visitor_id: str, raw: bytes) -> str:
        """A visitor key as the vault stores it: sealed by this data key, bound to the visitor."""
        nonce = os.urandom(NONCE_BYTES)
        return _b64(nonce + self._aead.encrypt(nonce, raw, self._visitor_context(visitor_id)))

    def load_visitor_key(self, visitor_id: str, wrapped: str | None) -> None:
        """Remember a visitor's key from the vault (None: it has none, the visitor is erased).
        A wrapped key that does not open is an ``EncryptionError``, never an erasure."""
        aead: AESGCM | None = None
        if wrapped is not None:
            raw = _unb64(wrapped)
            try:
                key = self._aead.decrypt(
                    raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._visitor_context(visitor_id)
                )
            except InvalidTag as err:
                raise EncryptionError(f"the key of visitor {visitor_id!r} does not open") from err
            aead = AESGCM(key)
        if len(self._visitors) >= VISITOR_KEY_CACHE and visitor_id not in self._visitors:
            del self._visitors[next(iter(self._visitors))]  # the oldest loaded
        self._visitors[visitor_id] = aead

    def forget_visitor(self, visitor_id: str) -> None:
        self._visitors.pop(visitor_id, None)

    def missing_visitors(self, rows: Iterable[Mapping[str, Any]]) -> set[str]:
        """Visitors whose keys these rows' ``lc2:`` values need and this key has not loaded."""
        needed: set[str] = set()
        for row in rows:
            for value in row.values():
                if isinstance(value, str) and VISITOR_PREFIX in value:
                    needed.update(_VISITOR_REF.findall(value))
        return needed.difference(self._visitors)

    def for_visitor(self, visitor_id: str) -> VisitorSealer:
        """This key, sealing with the visitor's key (loaded, not erased) from now on."""
        aead = self._visitors.get(visitor_id)
        if aead is None:
            raise EncryptionError(f"no key for visitor {visitor_id!r} (erased?)")
        return VisitorSealer(self, visitor_id, aead)

    def sealer_for(self, visitor_id: str) -> DataKey:
        """What seals values about the visitor: their key when loaded, else this key (a visitor
        erased meanwhile, whose rows are being deleted)."""
        aead = self._visitors.get(visitor_id)
        return self if aead is None else VisitorSealer(self, visitor_id, aead)

    def _open_visitor_bytes(self, data: bytes, context: str) -> bytes:
        end = data.index(b"\x00", len(VISITOR_BLOB_PREFIX))
        visitor_id = data[len(VISITOR_BLOB_PREFIX) : end].decode()
        try:
            aead = self._visitors[visitor_id]
        except KeyError:
            raise VisitorKeyNotLoaded(visitor_id) from None
        if aead is None:
            raise ErasedFile(context)
        raw = memoryview(data)[end + 1 :]
        aad = f"{self.workspace_id}|{visitor_id}|blob|{context}".encode()
        try:
            return aead.decrypt(bytes(raw[:NONCE_BYTES]), bytes(raw[NONCE_BYTES:]), aad)
        except InvalidTag as err:
            raise EncryptionError(f"the bytes of file {context!r} do not open") from err

    def _open_visitor_value(self, value: str, column: str) -> str:
        visitor_id, _, body = value[len(VISITOR_PREFIX) :].partition(":")
        try:
            aead = self._visitors[visitor_id]
        except KeyError:
            raise VisitorKeyNotLoaded(visitor_id) from None
        if aead is None:  # the key is destroyed: what erasure asked for, not an error
            return ERASED_JSON if column in _ERASED_AS_JSON else ERASED_TEXT
        raw = _unb64(body)
        aad = f"{self.workspace_id}|{visitor_id}|{column}".encode()
        try:
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], aad).decode()
        except InvalidTag as err:
            raise EncryptionError(f"a sealed value of {column} does not open") from err


class VisitorSealer(DataKey):
    """A workspace's data key that seals with one visitor's key: ``lc2:`` values. Everything
    else (search tokens, opening, the visitor-key cache) is the workspace key's, shared."""

    __slots__ = ("_visitor_aead", "_visitor_id")

    def __init__(self, key: DataKey, visitor_id: str, aead: AESGCM) -> None:
        # Shares the workspace key's state (no copy): the caches stay one per workspace.
        self.workspace_id = key.workspace_id
        self.vault = key.vault
        self._aead = key._aead
        self._search_mac = key._search_mac
        self._tokens = key._tokens
        self._visitors = key._visitors
        self._visitor_id = visitor_id
        self._visitor_aead = aead

    def seal(self, value: str, column: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        aad = f"{self.workspace_id}|{self._visitor_id}|{column}".encode()
        sealed = self._visitor_aead.encrypt(nonce, value.encode(), aad)
        return f"{VISITOR_PREFIX}{self._visitor_id}:{_b64(nonce + sealed)}"

    def seal_bytes(self, data: bytes, context: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        aad = f"{self.workspace_id}|{self._visitor_id}|blob|{context}".encode()
        head = VISITOR_BLOB_PREFIX + self._visitor_id.encode() + b"\x00"
        return head + nonce + self._visitor_aead.encrypt(nonce, data, aad)


def is_sealed_blob(data: bytes) -> bool:
    return data.startswith((BLOB_PREFIX, VISITOR_BLOB_PREFIX))


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith((PREFIX, VISITOR_PREFIX))


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def default_key_file(database_path: str) -> Path:
    """Where the embedded default keeps its generated master key: next to the database."""
    return Path(database_path + KEY_FILE_SUFFIX)


def read_key_file(path: Path) -> list[bytes]:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as err:
        raise EncryptionError(f"cannot read master key file {path}: {err}") from err
    return parse_master_keys(text)


def write_key_file(path: Path, keys_text: Sequence[str]) -> None:
    """Write (replace atomically) a key file, mode 0600."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = create_private_file(str(tmp))
    with os.fdopen(fd, "w", encoding="ascii") as out:
        out.write("\n".join(keys_text) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def generate_key_file(path: Path) -> None:
    write_key_file(path, [new_master_key_text()])


def resolve_master_keys(
    database_url: str,
    *,
    master_key: str | None = None,
    master_key_file: str | None = None,
    create: bool = False,
) -> tuple[MasterKeyRing | None, Path | None]:
    """The master key ring for a database, and the key file it came from (None: a setting).

    Order: ``master_key`` (setting or ``LIVECHAT_MASTER_KEY``), then ``master_key_file``, then
    (SQLite only) the file next to the database, generated there (0600) when missing and
    ``create``. PostgreSQL without a key: (None, None); the server refuses to start then.
    """
    if master_key:
        return MasterKeyRing(parse_master_keys(master_key), source="setting master_key"), None
    if master_key_file:
        path = Path(master_key_file)
        return MasterKeyRing(read_key_file(path), source=str(path)), path
    backend, target = backend_of(database_url)
    if backend != "sqlite":
        return None, None
    path = default_key_file(target)
    if not path.exists():
        if not create:
            return None, None
        path.parent.mkdir(parents=True, exist_ok=True)
        generate_key_file(path)
    return MasterKeyRing(read_key_file(path), source=str(path)), path
