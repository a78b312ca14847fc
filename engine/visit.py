"""The visit in progress of one visitor: what their actor must not forget while they browse.

A virtual actor is passivated after ``idle_timeout_s`` without messages, and a visitor reading
one page for ten minutes sends none. ``Visit`` holds what the visitor's actor knows about the
visit that storage does not (arrival, current page, pages viewed, the engine-clock times the
page_view triggers count from, the greeting shown). When the actor is passivated while the
visitor is still connected it leaves its ``Visit`` in ``EngineContext.kept_visits``; the next
activation (the visitor's next move, or the ticker when a trigger's alarm comes due) takes it
back, so time on the page and on the site run on across passivation (engine.greetings).
"""

from __future__ import annotations

import attrs

from engine.messages import PageViewInfo, VisitorGreeting

__all__ = ["Visit"]


@attrs.define(kw_only=True, eq=False)
class Visit:
    site_since: float  # engine clock: the visit began
    page_since: float  # engine clock: the current page opened
    arrived_at: float = 0.0  # wall clock, as the visitor list shows it; 0: not arrived yet
    page: PageViewInfo | None = None
    pages: int = 0
    greeted_page: float = -1.0  # page_since of the page a greeting was shown on
    shown: VisitorGreeting | None = None  # the greeting on the visitor list, until a chat
