"""Child process of the crash test: appends under load and prints each acknowledged append.

Usage: python -m tests.storage.crash_child DATABASE_URL RUN WORKSPACE_ID CONVERSATION_ID...
Prints "conversation_id seq client_msg_id" once ``append`` has returned (i.e. after the commit),
flushed immediately; the parent SIGKILLs this process at a random instant.
"""

from __future__ import annotations

import sys

import trio

from storage import AppendRequest, AuthorType, EventKind, open_storage

WRITERS_PER_CONVERSATION = 8


async def main(url: str, run: str, workspace_id: str, conversation_ids: list[str]) -> None:
    async with open_storage(url) as storage:

        async def writer(conversation_id: str, writer_no: int) -> None:
            n = 0
            while True:
                n += 1
                cmid = f"{run}-{writer_no}-{n}"
                result = await storage.append(
                    AppendRequest(
                        workspace_id=workspace_id,
                        conversation_id=conversation_id,
                        kind=EventKind.MESSAGE,
                        author_type=AuthorType.VISITOR,
                        body=f"message {cmid} ✓",
                        client_msg_id=cmid,
                    )
                )
                sys.stdout.write(f"{conversation_id} {result.event.seq} {cmid}\n")
                sys.stdout.flush()

        async with trio.open_nursery() as nursery:
            for index, conversation_id in enumerate(conversation_ids):
                for w in range(WRITERS_PER_CONVERSATION):
                    nursery.start_soon(writer, conversation_id, index * 100 + w)


if __name__ == "__main__":
    trio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
