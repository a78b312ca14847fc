"""``livechat serve --workers N``: one parent, N server processes sharing one listening socket.

The parent binds the port once and hands the socket to every worker (an inherited file
descriptor: the kernel spreads new connections over the processes accepting on it, and the port
stays bound while a worker restarts, so clients never see it closed). Worker 0 starts alone and
says when it serves (a byte on a pipe), so migrations and first-start seeding run once; then the
others start. Each worker is a cluster node of its own, ``<node id>-w<i>``, and reaches the
others through the bus (``--bus-url``, required above one worker).

A worker that exits while the parent is not stopping is started again after
``RESTART_DELAY_S``; more than ``MAX_RESTARTS`` restarts of one worker within ``PERIOD_S`` stop
the parent with status 1 (for the service manager), as a supervisor past its intensity does.
SIGTERM/SIGINT to the parent is passed on to every worker, which drains as a single server does
(sockets closed with 1001); the parent waits ``shutdown_grace_s + engine_shutdown_deadline_s +
STOP_SLACK_S`` for them, then kills what is left. A parent that is killed takes its workers
with it: they watch a pipe only the parent can hold open (``--parent-fd``) and shut down as on
SIGTERM when it closes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
from collections import deque
from collections.abc import Sequence
from functools import partial

import attrs
import trio

from web.settings import Settings, generate_node_id

log = logging.getLogger("livechat.workers")

RESTART_DELAY_S = 0.5  # a crashing worker is not restarted in a tight loop
MAX_RESTARTS = 5  # restarts of one worker within PERIOD_S before the parent gives up
PERIOD_S = 60.0
STOP_SLACK_S = 5.0
LISTEN_BACKLOG = 1024


class WorkerStartFailed(Exception):
    """A worker exited before it served (a bad setting, the database unreachable at start)."""

    def __init__(self, index: int, status: int) -> None:
        super().__init__(f"worker {index} exited with status {status} before serving")
        self.status = status


def listen_socket(settings: Settings) -> socket.socket:
    """The one listening socket every worker accepts on (inheritable, non-blocking)."""
    family = socket.AF_INET6 if ":" in settings.server.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.server.host, settings.server.port))
    sock.listen(LISTEN_BACKLOG)
    sock.setblocking(False)
    sock.set_inheritable(True)
    return sock


@attrs.define(eq=False)
class WorkerParent:
    """Starts, watches and restarts the workers; see the module docstring."""

    settings: Settings
    argv: Sequence[str]  # the parent's own ``serve ...`` arguments, repeated for each worker
    node_id: str
    listen_fd: int
    lifeline_fd: int  # read end of a pipe whose write end only the parent holds
    processes: dict[int, trio.Process] = attrs.field(factory=dict)
    stopping: bool = False
    gave_up: bool = False

    def command(self, index: int, ready_fd: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "web.cli",
            *self.argv,
            "--worker-fd",
            str(self.listen_fd),
            "--ready-fd",
            str(ready_fd),
            "--parent-fd",
            str(self.lifeline_fd),
            "--node-id",
            f"{self.node_id}-w{index}",
        ]

    async def _start(self, index: int) -> trio.Process:
        """Start worker ``index`` and wait until it serves; ``WorkerStartFailed`` otherwise."""
        read_fd, write_fd = os.pipe()
        try:
            process = await trio.lowlevel.open_process(
                self.command(index, write_fd),
                pass_fds=(self.listen_fd, write_fd, self.lifeline_fd),
            )
        finally:
            os.close(write_fd)
        self.processes[index] = process
        log.info("worker %d started (pid %d, node %s-w%d)", index, process.pid, self.node_id, index)
        async with trio.lowlevel.FdStream(read_fd) as ready:
            # the worker writes one byte once it listens; EOF: it exited first
            signalled = await ready.receive_some(1)
        if not signalled:
            raise WorkerStartFailed(index, await process.wait())
        log.info("worker %d serving (pid %d)", index, process.pid)
        return process

    async def keep(
        self, index: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run worker ``index`` until the parent stops; restart it whenever it exits."""
        restarts: deque[float] = deque()
        process = await self._start(index)
        task_status.started()
        while True:
            status = await process.wait()
            if self.stopping:
                return
            now = trio.current_time()
            restarts.append(now)
            while restarts and restarts[0] < now - PERIOD_S:
                restarts.popleft()
            if len(restarts) > MAX_RESTARTS:
                log.error(
                    "worker %d exited %d times within %.0f s: stopping",
                    index,
                    len(restarts),
                    PERIOD_S,
                )
                self.gave_up = True
                raise WorkerStartFailed(index, status)
            log.warning("worker %d exited with status %d: restarting it", index, status)
            await trio.sleep(RESTART_DELAY_S)
            while True:
                try:
                    process = await self._start(index)
                    break
                except WorkerStartFailed as err:
                    log.warning("worker %d: %s; trying again", index, err)
                    await trio.sleep(RESTART_DELAY_S)

    async def stop(self) -> None:
        """Pass SIGTERM on to every worker, wait for them within the deadline, kill the rest."""
        self.stopping = True
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        s = self.settings
        deadline_s = s.server.shutdown_grace_s + s.engine.shutdown_deadline_s + STOP_SLACK_S
        with trio.move_on_after(deadline_s):
            for process in self.processes.values():
                await process.wait()
        for process in self.processes.values():
            if process.returncode is None:
                log.error("worker pid %d did not stop in time: killed", process.pid)
                process.kill()
                await process.wait()


async def _supervise(settings: Settings, argv: Sequence[str]) -> int:
    from web.server import SHUTDOWN_SIGNALS, configure_logging

    configure_logging(settings.server.log_level)
    node_id = settings.cluster.node_id
    if node_id is None:
        node_id = generate_node_id()
        log.warning("generated node id %s (give --node-id to keep it across restarts)", node_id)
    # The workers' lifeline: they read its read end; its write end, never written and not
    # inherited, closes only when this process ends (killed included), and they end with it.
    lifeline_read, lifeline_write = os.pipe()
    with (
        contextlib.ExitStack() as pipe,
        listen_socket(settings) as sock,
        trio.open_signal_receiver(*SHUTDOWN_SIGNALS) as signals,
    ):
        pipe.callback(os.close, lifeline_read)
        pipe.callback(os.close, lifeline_write)
        parent = WorkerParent(settings, argv, node_id, sock.fileno(), lifeline_read)
        failed: list[WorkerStartFailed] = []
        try:
            async with trio.open_nursery() as nursery:
                # worker 0 first: it migrates and seeds the first start alone
                for index in range(settings.cluster.workers):
                    await nursery.start(partial(parent.keep, index))
                print(
                    f"livechat: {settings.cluster.workers} workers serving on"
                    f" {settings.server.base_url} (node {node_id})",
                    flush=True,
                )
                async for signum in signals:
                    log.warning("received %s: stopping the workers", signal.Signals(signum).name)
                    break
                with trio.CancelScope(shield=True):
                    await parent.stop()
                nursery.cancel_scope.cancel()
        except* WorkerStartFailed as group:
            failed.extend(e for e in group.exceptions if isinstance(e, WorkerStartFailed))
            with trio.CancelScope(shield=True):
                await parent.stop()
    if not failed:
        return 0
    print(f"livechat: error: {failed[0]}", file=sys.stderr, flush=True)
    return 1 if parent.gave_up or failed[0].status == 0 else failed[0].status


def run_workers(settings: Settings, argv: Sequence[str]) -> int:
    """The ``--workers N`` parent's entry point; returns the exit status."""
    return trio.run(_supervise, settings, argv)
