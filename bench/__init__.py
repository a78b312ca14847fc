"""Load tests of the routing core, the storage layer and the whole server."""
