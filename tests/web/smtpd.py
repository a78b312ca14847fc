"""A real SMTP server for the tests (aiosmtpd on loopback, in its own thread).

Three modes, like the three ``smtp_url`` schemes: ``plain``, ``starttls`` (STARTTLS required,
AUTH only after it) and ``tls`` (implicit TLS). Certificates come from a ``trustme`` CA whose
PEM file the server under test is given as ``smtp_ca_file``.

``MailSink.wait(n)`` waits (bounded) until ``n`` messages have arrived, on a condition
variable: tests never sleep to see whether mail came.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import attrs
import trio
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

USERNAME = "mailer"
PASSWORD = "s3cret pass/word"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@attrs.frozen
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    authenticated_as: str | None

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    def part(self, subtype: str) -> str:
        body = self.message.get_body(preferencelist=(subtype,))
        assert body is not None, f"no text/{subtype} part"
        return str(body.get_content())


class MailSink:
    """The aiosmtpd handler: keeps every message; ``refuse_with`` answers DATA with an error."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self.refuse_with: str | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.refuse_with is not None:
            return self.refuse_with
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        login = session.auth_data.login.decode() if session.auth_data else None
        with self._cond:
            self.messages.append(
                Received(envelope.mail_from, tuple(envelope.rcpt_tos), message, login)
            )
            self._cond.notify_all()
        return "250 OK"

    def wait_sync(self, count: int, timeout_s: float = 20.0) -> list[Received]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout_s):
                raise AssertionError(
                    f"expected {count} mail(s) within {timeout_s} s, got {len(self.messages)}"
                )
            return list(self.messages)

    async def wait(self, count: int, timeout_s: float = 20.0) -> list[Received]:
        return await trio.to_thread.run_sync(
            self.wait_sync, count, timeout_s, abandon_on_cancel=True
        )


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth: Any) -> Any:
    ok = isinstance(auth, LoginPassword) and (auth.login, auth.password) == (
        USERNAME.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False, auth_data=auth)


@attrs.frozen
class SmtpServer:
    mode: str
    port: int
    sink: MailSink
    ca_file: str

    def url(self, *, auth: bool = False) -> str:
        scheme = {"plain": "smtp", "starttls": "smtp+starttls", "tls": "smtps"}[self.mode]
        from urllib.parse import quote

        cred = f"{quote(USERNAME)}:{quote(PASSWORD, safe='')}@" if auth else ""
        return f"{scheme}://{cred}127.0.0.1:{self.port}"

    def settings(self, *, auth: bool = False) -> dict[str, Any]:
        """The server-under-test settings that deliver here."""
        return {
            "smtp_url": self.url(auth=auth),
            "mail_from": "support@livechat.test",
            "smtp_ca_file": self.ca_file,
            "smtp_timeout_s": 10.0,
        }


def make_ca(directory: Path) -> tuple[trustme.CA, str]:
    ca = trustme.CA()
    ca_file = directory / "smtp-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return ca, str(ca_file)


@contextmanager
def smtp_server(
    directory: Path, mode: str = "plain", *, port: int | None = None, sink: MailSink | None = None
) -> Iterator[SmtpServer]:
    """Run an SMTP server on loopback until the block exits."""
    ca, ca_file = make_ca(directory)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    sink = sink or MailSink()
    port = port or free_port()
    kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": port}
    if mode == "starttls":
        kwargs.update(
            tls_context=server_ctx,
            require_starttls=True,
            authenticator=_authenticator,
            auth_require_tls=True,
        )
    elif mode == "tls":
        # implicit TLS: aiosmtpd does not count it as TLS for AUTH, the socket is TLS anyway
        kwargs.update(ssl_context=server_ctx, authenticator=_authenticator, auth_require_tls=False)
        kwargs["server_hostname"] = "127.0.0.1"
    else:
        kwargs.update(authenticator=_authenticator, auth_require_tls=False)
    # A plain asyncio loop of our own: the PostgreSQL tests' trio-asyncio replaces the global
    # event-loop policy, whose new_event_loop() refuses to run inside trio.
    loop = asyncio.SelectorEventLoop()
    controller = Controller(sink, loop=loop, **kwargs)
    controller.start()
    try:
        yield SmtpServer(mode=mode, port=port, sink=sink, ca_file=ca_file)
    finally:
        controller.stop()
        loop.close()
