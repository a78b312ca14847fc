"""Shared fixtures. PostgreSQL and browser tests skip with a reason on a user's machine, and fail
instead when CI sets LIVECHAT_REQUIRE_POSTGRES / LIVECHAT_REQUIRE_BROWSER."""
