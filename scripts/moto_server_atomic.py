"""moto_server with DynamoDB's atomicity: one request handled at a time.

moto's server is threaded and its DynamoDB backend checks a ConditionExpression and then
writes, with no lock in between: two concurrent PutItems conditional on the same version can
both succeed, a lost update real DynamoDB never allows. costream's concurrency tests rely on
exactly that guarantee (every write is conditional), so they run against this wrapper, which
serialises the handling of requests (connections stay threaded). Same arguments as
moto_server.
"""

import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import main

_LOCK = threading.Lock()
_CALL = DomainDispatcherApplication.__call__


def _serialised(self, environ, start_response):
    with _LOCK:
        # Materialise the body inside the lock: the backend work is done by then.
        return list(_CALL(self, environ, start_response))


DomainDispatcherApplication.__call__ = _serialised

if __name__ == "__main__":
    main()
