"""The web layer: Quart-Trio app, WebSocket bridge, admin API, console, and the CLI."""
