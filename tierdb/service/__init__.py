"""The service layer: the rules every entry point applies the same way.

The REST API (tierdb/api), embedded mode (tierdb/embedded.py) and the engine itself call these
instead of writing their own version, so a request gets the same answer (and the same error
kind) whichever way it arrives:

- ``spec``: a create request -> the complete ``CollectionSpec`` (server defaults, policy
  names, ``server.max_dimension``, S3 needed by the S3 policies).
- ``limits``: one set of caps taken from ``[server]`` settings (k, ef, batch, query vectors).
- ``rules``: argument rules (``ids`` or ``filter``, ``vector`` xor ``vectors``, ``include``).

The error-kind table (kind -> HTTP status -> client exception) is ``tierdb.errors.ERROR_KINDS``;
the wire types shared by server and clients are in ``tierdb.models``.  This package imports
only those core modules, ``tierdb.config`` and ``tierdb.tiering``: never the engine, the API
or the clients.
"""
