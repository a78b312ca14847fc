"""The chat engine: supervised Trio actors for conversations, agents and visitors, and routing.

Knows nothing of HTTP, JSON or SQL; reaches storage only through ``storage``'s interface.
"""
